//! Triage of one message before anything is held: what its envelope (JetStream info,
//! headers, subject) says, and whether its payload is a job that can run. Pure, so unit
//! tests feed it bytes.

use std::time::Instant;

use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::Message;
use jetinfer_schemas::names::{msg_id_is_for, parse_job_subject};
use jetinfer_schemas::{decode_job, limits::is_valid_job_id, Job, JobError, Limits};

/// The decoded job if it can run; otherwise the id to answer (when one is known) and the
/// error.
pub(super) fn validate<'p>(
    payload: &'p [u8],
    envelope: &Envelope,
    limits: &Limits,
) -> Result<Job<'p>, (Option<String>, JobError)> {
    let job = decode_job(payload, limits).map_err(|e| (envelope.header_id.clone(), e))?;
    // JetStream de-duplicated the message under its header: a payload that names another
    // job would be answered under an id its producer did not publish. Answer the header's.
    if let Some(header_id) = &envelope.header_id {
        if !msg_id_is_for(header_id, &job.id) {
            let e = JobError::bad_payload(format!(
                "job id {:?} differs from its Nats-Msg-Id {header_id:?}",
                &*job.id
            ));
            return Err((Some(header_id.clone()), e));
        }
    }
    if let Err(e) = job.validate(limits) {
        let id = if is_valid_job_id(&job.id) {
            Some(job.id.to_string())
        } else {
            envelope.header_id.clone()
        };
        return Err((id, e));
    }
    if job.model != envelope.subject_model {
        let e = JobError::invalid_input(format!(
            "job model {:?} differs from the subject's {:?}",
            job.model, envelope.subject_model
        ));
        return Err((Some(job.id.to_string()), e));
    }
    Ok(job)
}

/// What the message says about its job before the payload is decoded.
pub(super) struct Envelope {
    /// JetStream's delivery count (1 on the first delivery).
    pub delivered: u32,
    /// When JetStream stored the message, Unix ms.
    pub published_ms: u64,
    /// The `Nats-Msg-Id` header, when it is a valid job id: who to answer when the
    /// payload cannot be decoded.
    pub header_id: Option<String>,
    /// The model named by the subject (empty when the subject is not a job subject).
    pub subject_model: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// When the message's group was read: one clock read per group, not per job.
    pub received: Instant,
}

impl Envelope {
    pub fn of(msg: &Message, received: Instant) -> Envelope {
        let (delivered, published_ms) = msg
            .reply
            .as_deref()
            .and_then(delivery_of)
            .unwrap_or_else(|| (1, jetinfer_schemas::now_ms()));
        let [msg_id, traceparent, tracestate] =
            headers(msg, [&NATS_MESSAGE_ID, &TRACEPARENT, &TRACESTATE]);
        Envelope {
            delivered,
            published_ms,
            header_id: msg_id.filter(|id| is_valid_job_id(id)),
            subject_model: parse_job_subject(msg.subject.as_str())
                .map(|(_, m)| m.to_string())
                .unwrap_or_default(),
            traceparent,
            tracestate,
            received,
        }
    }
}

/// JetStream's delivery count (at least 1) and the message's stored time (Unix ms), read
/// from its `$JS.ACK.` reply subject, in either layout of ADR-15 as async-nats reads them:
/// `<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<nanos>.<pending>`, or, with
/// nine tokens or more, `<domain>.<account hash>.` first. Read here rather than through
/// `Message::info`, which also builds a calendar date from 128-bit nanoseconds only for us
/// to turn it back into milliseconds: 2 % of the dispatcher's CPU on the H100 host.
fn delivery_of(reply: &str) -> Option<(u32, u64)> {
    let mut tokens = [""; 10];
    let mut n = 0;
    for (slot, token) in tokens
        .iter_mut()
        .zip(reply.strip_prefix("$JS.ACK.")?.split('.'))
    {
        *slot = token;
        n += 1;
    }
    let at = match n {
        7 => 0,
        9.. => 2,
        _ => return None,
    };
    let delivered: u64 = tokens[at + 2].parse().ok()?;
    let nanos: u64 = tokens[at + 5].parse().ok()?;
    Some((
        delivered.clamp(1, u32::MAX as u64) as u32,
        nanos / 1_000_000,
    ))
}

/// Built once: a `&str` name is validated and copied on every lookup.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The first value of each header in `names`, in one pass over the message's headers (a
/// job carries one to three): a lookup by name hashes it (SipHash) each time, ~0.6 % of
/// the dispatcher's CPU for three lookups per job on the H100 host.
fn headers<const N: usize>(msg: &Message, names: [&HeaderName; N]) -> [Option<String>; N] {
    let mut found = [const { None }; N];
    for (name, values) in msg.headers.iter().flat_map(|h| h.iter()) {
        if let Some(at) = names.iter().position(|n| *n == name) {
            found[at] = values.first().map(|v| v.as_str().to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use jetinfer_schemas::tensor::Tensor;
    use jetinfer_schemas::{encode, ErrorCode};

    use super::*;

    fn envelope(header_id: Option<&str>, subject_model: &str) -> Envelope {
        Envelope {
            delivered: 1,
            published_ms: 0,
            header_id: header_id.map(Into::into),
            subject_model: subject_model.into(),
            traceparent: None,
            tracestate: None,
            received: Instant::now(),
        }
    }

    fn payload(id: &str, model: &str) -> Vec<u8> {
        encode(&Job::new(
            id,
            model,
            vec![Tensor::from_f32(vec![2], &[1.0, 2.0])],
        ))
    }

    #[test]
    fn delivery_count_and_time_come_from_either_reply_subject_layout() {
        // 2023-11-14T22:13:20.123456789Z
        let nanos = "1700000000123456789";
        let old = format!("$JS.ACK.JETINFER_P1.dispatcher-p1.3.120.95.{nanos}.7");
        assert_eq!(delivery_of(&old), Some((3, 1_700_000_000_123)));
        let new = format!("$JS.ACK.hub.ACCHASH.JETINFER_P1.dispatcher-p1.2.120.95.{nanos}.7.r4nd");
        assert_eq!(delivery_of(&new), Some((2, 1_700_000_000_123)));
        let no_domain = format!("$JS.ACK._.ACCHASH.S.C.1.1.1.{nanos}.0");
        assert_eq!(delivery_of(&no_domain), Some((1, 1_700_000_000_123)));
        // What is not a JetStream reply subject, or is cut short, says nothing.
        for bad in [
            "_INBOX.abc",
            "$JS.ACK.S.C.1.1.1",
            "$JS.ACK.S.C.x.1.1.5.0",
            "$JS.ACK.S.C.1.1.1.-5.0",
        ] {
            assert_eq!(delivery_of(bad), None, "{bad}");
        }
        // A zero count reads as the first delivery.
        assert_eq!(delivery_of("$JS.ACK.S.C.0.1.1.5000000.0"), Some((1, 5)));
    }

    #[test]
    fn a_valid_job_for_its_subject_passes() {
        let bytes = payload("job-1", "m");
        let job = validate(&bytes, &envelope(Some("job-1"), "m"), &Limits::default()).unwrap();
        assert_eq!((&*job.id, &*job.model), ("job-1", "m"));
    }

    #[test]
    fn an_undecodable_payload_is_answered_under_the_header_id() {
        let (id, e) = validate(
            b"not msgpack",
            &envelope(Some("job-1"), "m"),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            (id.as_deref(), e.code),
            (Some("job-1"), ErrorCode::BadPayload)
        );
    }

    #[test]
    fn a_job_for_another_model_than_its_subject_is_invalid_input() {
        let bytes = payload("job-1", "m");
        let (id, e) = validate(&bytes, &envelope(None, "other"), &Limits::default()).unwrap_err();
        assert_eq!(
            (id.as_deref(), e.code),
            (Some("job-1"), ErrorCode::InvalidInput)
        );
    }

    #[test]
    fn a_payload_id_other_than_its_msg_id_is_answered_under_the_msg_id() {
        let bytes = payload("victim", "m");
        let (id, e) =
            validate(&bytes, &envelope(Some("mine"), "m"), &Limits::default()).unwrap_err();
        assert_eq!(
            (id.as_deref(), e.code),
            (Some("mine"), ErrorCode::BadPayload)
        );
        // A dead letter's replay carries its own msg id.
        let replay = jetinfer_schemas::names::replay_msg_id("victim", 12);
        assert!(validate(&bytes, &envelope(Some(&replay), "m"), &Limits::default()).is_ok());
    }

    #[test]
    fn an_invalid_job_id_falls_back_to_the_header_id() {
        let bytes = payload("bad id with spaces", "m");
        let (id, e) =
            validate(&bytes, &envelope(Some("job-1"), "m"), &Limits::default()).unwrap_err();
        assert_eq!(id.as_deref(), Some("job-1"));
        assert_eq!(e.code, ErrorCode::BadPayload);
    }
}

//! The result of a job, stored in Redis at `<prefix>:result:<id>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, JobError};
use crate::tensor::Tensor;
use crate::SCHEMA_VERSION;

/// The hand-written writer of results ([`JobResult::encode_sized`]).
mod writer;

/// The trace id of a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<flags>`),
/// as results record it; `None` when the header is malformed or the id is all zeros.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let hex = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && id.bytes().any(|b| b != b'0')).then_some(id)
}

/// How a job ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Expired => "expired",
        }
    }
}

/// The error of a failed job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl From<JobError> for ErrorBody {
    fn from(e: JobError) -> Self {
        ErrorBody {
            code: e.code,
            message: e.message,
        }
    }
}

/// Where the job's time went, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// From publish (JetStream timestamp) until its batch started.
    #[serde(default)]
    pub queued_ms: f64,
    /// Jobs in the batch that ran this one (0 when no model ran).
    #[serde(default)]
    pub batch_size: u32,
    /// The batch's forward pass, including host ↔ device copies.
    #[serde(default)]
    pub compute_ms: f64,
    /// From publish until the result was written.
    #[serde(default)]
    pub total_ms: f64,
}

/// A job's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobResult<'a> {
    pub v: u32,
    pub id: String,
    pub status: Status,
    pub model: String,
    /// The version that served the job ("" when no model was reached).
    #[serde(default)]
    pub version: String,
    #[serde(borrow, default)]
    pub outputs: Vec<Tensor<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Id of the worker or dispatcher that produced the result.
    #[serde(default)]
    pub worker: String,
    /// [`inputs_digest`](crate::tensor::inputs_digest) of the inputs this result answers
    /// ("" when they were never decoded). A job that reuses an id with other inputs is told
    /// apart from the one that owns the result by comparing digests.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inputs_digest: String,
    /// W3C trace id (32 hex digits) of the job's trace, "" when it was not traced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// True when the content-addressed cache answered.
    #[serde(default)]
    pub cached: bool,
    /// How many times the job was delivered (1 on the first try).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub completed_at_ms: u64,
}

impl<'a> JobResult<'a> {
    /// A successful result; timings and worker are filled in by the caller.
    pub fn ok(
        id: impl Into<String>,
        model: impl Into<String>,
        version: impl Into<String>,
        outputs: Vec<Tensor<'a>>,
    ) -> Self {
        JobResult::ok_at(id, model, version, outputs, crate::now_ms())
    }

    /// [`JobResult::ok`], completed at `completed_at_ms` (a caller finishing many jobs at
    /// once reads the clock once).
    pub fn ok_at(
        id: impl Into<String>,
        model: impl Into<String>,
        version: impl Into<String>,
        outputs: Vec<Tensor<'a>>,
        completed_at_ms: u64,
    ) -> Self {
        JobResult {
            v: SCHEMA_VERSION,
            id: id.into(),
            status: Status::Ok,
            model: model.into(),
            version: version.into(),
            outputs,
            error: None,
            meta: BTreeMap::new(),
            worker: String::new(),
            inputs_digest: String::new(),
            trace_id: String::new(),
            cached: false,
            attempts: 1,
            timings: Timings::default(),
            completed_at_ms,
        }
    }

    /// A failed result; `expired` gets status `expired`, every other code `error`.
    pub fn failed(id: impl Into<String>, model: impl Into<String>, error: JobError) -> Self {
        let status = if error.code == ErrorCode::Expired {
            Status::Expired
        } else {
            Status::Error
        };
        JobResult {
            status,
            error: Some(error.into()),
            ..JobResult::ok(id, model, "", Vec::new())
        }
    }

    /// The result as [`crate::encode_sized`] writes it (a MessagePack map), byte for byte
    /// (property-tested against `rmp_serde` in `tests/roundtrip.rs`), into a buffer of
    /// `capacity` bytes. Written by hand (`result/writer.rs`): serde's generic path was ~4 %
    /// of the worker's CPU per small job (docs/benchmarks.md).
    pub fn encode_sized(&self, capacity: usize) -> Vec<u8> {
        writer::write_job_result(self, capacity)
    }

    /// The error code, if the job failed.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    /// True unless this result provably belongs to another job under the same id: one
    /// with other inputs (by digest), another model, or another named version. A result
    /// that records no digest (an older writer, or inputs that never decoded) cannot tell,
    /// and is taken as the job's own.
    pub fn answers(&self, job: &crate::Job<'_>) -> bool {
        let same_version = match (job.version.as_deref(), self.version.as_str()) {
            (Some(wanted), served) => served.is_empty() || served == wanted,
            (None, _) => true,
        };
        self.model == *job.model
            && same_version
            && (self.inputs_digest.is_empty() || self.inputs_digest == job.inputs_digest())
    }

    /// Detaches the result from the buffer it was decoded from.
    pub fn into_owned(self) -> JobResult<'static> {
        JobResult {
            outputs: self.outputs.into_iter().map(Tensor::into_owned).collect(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn round_trip() {
        let mut r = JobResult::ok("j1", "mlp", "1", vec![Tensor::from_f32(vec![1], &[0.5])]);
        r.worker = "w1".into();
        r.timings = Timings {
            queued_ms: 1.5,
            batch_size: 4,
            compute_ms: 0.25,
            total_ms: 2.0,
        };
        let bytes = encode(&r);
        let back: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
        let e = JobResult::failed("j2", "mlp", JobError::new(ErrorCode::Expired, "late"));
        assert_eq!(e.status, Status::Expired);
        let bytes = encode(&e);
        let back: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.error_code(), Some(ErrorCode::Expired));
    }

    #[test]
    fn trace_ids_come_from_well_formed_traceparents_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn a_result_answers_only_the_job_it_records() {
        let inputs = vec![Tensor::from_f32(vec![1], &[0.5])];
        let job = crate::Job::new("j1", "mlp", inputs.clone());
        let mut r = JobResult::ok("j1", "mlp", "1", Vec::new());
        assert!(r.answers(&job), "no digest recorded: cannot tell");
        r.inputs_digest = crate::tensor::inputs_digest(&inputs);
        assert!(r.answers(&job));
        let other = crate::Job::new("j1", "mlp", vec![Tensor::from_f32(vec![1], &[0.25])]);
        assert!(!r.answers(&other), "other inputs");
        assert!(
            !r.answers(&crate::Job::new("j1", "other", inputs.clone())),
            "other model"
        );
        let mut pinned = job.clone();
        pinned.version = Some("2".into());
        assert!(!r.answers(&pinned), "another named version");
    }

    #[test]
    fn hand_written_error_result() {
        // {v:1, id:"j", status:"error", model:"m", error:{code:"bad_payload", message:"x"}}
        // The minimal result another implementation might write: every other field defaults.
        let bytes = hex::decode(concat!(
            "85a17601a26964a16aa6737461747573a56572726f72a56d6f64656ca16d",
            "a56572726f7282a4636f6465ab6261645f7061796c6f6164a76d657373616765a178"
        ))
        .unwrap();
        let r: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.error_code(), Some(ErrorCode::BadPayload));
        assert!(r.outputs.is_empty());
    }
}

/// What the content-addressed cache stores under `<prefix>:cache:<model>:<version>:<digest>`:
/// the outputs of a successful run, reused for any job with the same inputs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CachedOutputs<'a> {
    pub v: u32,
    #[serde(borrow)]
    pub outputs: Vec<Tensor<'a>>,
}

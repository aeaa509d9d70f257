//! A hand-written reader for run requests as dispatchers write them, tried before
//! `rmp_serde` (see [`super::RunRequest::decode`]).
//!
//! A worker reads one request per bundle, and `rmp_serde` copied every job's payload out of
//! it into a `Bytes` of its own: this reader hands out slices of the request's buffer
//! instead, and skips serde's generic path (docs/benchmarks.md, "First deliveries skip the
//! lookup, and the job reader"). Like the job reader (`job/reader.rs`) it gives up (`None`) at any other shape — an unknown or repeated
//! key, another encoding of a value, trailing bytes — and `rmp_serde` decides then.

use bytes::Bytes;

use super::{RunJob, RunRequest};
use crate::msgpack_reader::{set, Reader};
use crate::names::Priority;

/// The run request in `bytes`, its payloads sharing `bytes`; `None` to leave it to
/// `rmp_serde`.
pub(crate) fn read_run_request(bytes: &Bytes) -> Option<RunRequest> {
    let mut r = Reader::new(bytes);
    let (mut v, mut jobs) = (None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"v" => set(&mut v, u32::try_from(r.uint()?).ok()?)?,
            b"jobs" => {
                let n = r.array_len()?;
                let mut list = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    list.push(run_job(&mut r, bytes)?);
                }
                set(&mut jobs, list)?
            }
            _ => return None,
        }
    }
    let request = RunRequest { v: v?, jobs: jobs? };
    r.at_end().then_some(request)
}

fn run_job(r: &mut Reader<'_>, whole: &Bytes) -> Option<RunJob> {
    let (mut payload, mut priority, mut deadline_ms, mut remaining_ms) = (None, None, None, None);
    let (mut published_ms, mut attempt, mut suspect, mut report_existing) =
        (None, None, None, None);
    let (mut traceparent, mut tracestate) = (None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"payload" => set(&mut payload, whole.slice_ref(r.bin()?))?,
            b"priority" => set(&mut priority, priority_named(r.str()?)?)?,
            b"deadline_ms" => set(&mut deadline_ms, r.uint()?)?,
            b"remaining_ms" => set(&mut remaining_ms, r.nil_or(Reader::uint)?)?,
            b"published_ms" => set(&mut published_ms, r.uint()?)?,
            b"attempt" => set(&mut attempt, u32::try_from(r.uint()?).ok()?)?,
            b"suspect" => set(&mut suspect, r.bool()?)?,
            b"report_existing" => set(&mut report_existing, r.bool()?)?,
            b"traceparent" => set(&mut traceparent, r.nil_or(Reader::str)?)?,
            b"tracestate" => set(&mut tracestate, r.nil_or(Reader::str)?)?,
            _ => return None,
        }
    }
    Some(RunJob {
        payload: payload?,
        priority: priority?,
        deadline_ms: deadline_ms?,
        remaining_ms: remaining_ms.flatten(),
        published_ms: published_ms?,
        attempt: attempt?,
        suspect: suspect.unwrap_or(false),
        report_existing: report_existing.unwrap_or(false),
        traceparent: traceparent.flatten().map(str::to_string),
        tracestate: tracestate.flatten().map(str::to_string),
    })
}

fn priority_named(name: &str) -> Option<Priority> {
    Priority::ALL.into_iter().find(|p| p.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    fn request() -> RunRequest {
        let job = |payload: &'static [u8], attempt| RunJob {
            payload: Bytes::from_static(payload),
            priority: Priority::P2,
            deadline_ms: u64::MAX,
            remaining_ms: Some(300),
            published_ms: 5,
            attempt,
            suspect: attempt > 1,
            report_existing: attempt == 1,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("vendor=1".into()),
        };
        RunRequest {
            v: 1,
            jobs: vec![job(b"\x80", 1), job(b"", 2)],
        }
    }

    #[test]
    fn reads_what_dispatchers_write_with_payloads_in_the_request_buffer() {
        let bytes = Bytes::from(encode(&request()));
        let read = read_run_request(&bytes).expect("the usual shape");
        assert_eq!(read, request());
        let whole = bytes.as_ptr_range();
        assert!(whole.contains(&read.jobs[0].payload.as_ptr()), "a copy");
    }

    #[test]
    fn leaves_other_shapes_to_rmp_serde() {
        let mut trailing = encode(&request());
        trailing.push(0xc0);
        assert_eq!(read_run_request(&Bytes::from(trailing)), None);
        let positional = rmp_serde::to_vec(&request()).unwrap();
        assert_eq!(read_run_request(&Bytes::from(positional)), None);
    }
}

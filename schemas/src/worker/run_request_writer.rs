//! A hand-written writer of run requests: the same bytes `rmp_serde` writes for a
//! [`RunRequest`] (a property test in `tests/roundtrip.rs` holds them equal), without serde's
//! generic path, which was ~2 % of the dispatcher's CPU per small job (docs/benchmarks.md,
//! "First deliveries skip the lookup, and the job reader").

use super::{RunJob, RunRequest};
use crate::msgpack_writer::Writer;

/// `request` as `rmp_serde` (`encode`) writes it, into a buffer of `capacity` bytes.
pub(crate) fn write_run_request(request: &RunRequest, capacity: usize) -> Vec<u8> {
    let mut w = Writer::with_capacity(capacity);
    w.map_len(2);
    w.str("v");
    w.uint(request.v as u64);
    w.str("jobs");
    w.array_len(request.jobs.len());
    for job in &request.jobs {
        run_job(&mut w, job);
    }
    w.into_bytes()
}

/// The fields serde writes: optional ones only when set, as `skip_serializing_if` says.
fn run_job(w: &mut Writer, job: &RunJob) {
    let fields = 5
        + job.remaining_ms.is_some() as usize
        + job.suspect as usize
        + job.report_existing as usize
        + job.traceparent.is_some() as usize
        + job.tracestate.is_some() as usize;
    w.map_len(fields);
    w.str("payload");
    w.bin(&job.payload);
    w.str("priority");
    w.str(job.priority.as_str());
    w.str("deadline_ms");
    w.uint(job.deadline_ms);
    if let Some(ms) = job.remaining_ms {
        w.str("remaining_ms");
        w.uint(ms);
    }
    w.str("published_ms");
    w.uint(job.published_ms);
    w.str("attempt");
    w.uint(job.attempt as u64);
    if job.suspect {
        w.str("suspect");
        w.bool(true);
    }
    if job.report_existing {
        w.str("report_existing");
        w.bool(true);
    }
    if let Some(t) = &job.traceparent {
        w.str("traceparent");
        w.str(t);
    }
    if let Some(t) = &job.tracestate {
        w.str("tracestate");
        w.str(t);
    }
}

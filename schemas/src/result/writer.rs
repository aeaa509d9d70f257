//! A hand-written writer of job results: the same bytes `rmp_serde` writes for a
//! [`JobResult`] (a property test in `tests/roundtrip.rs` holds them equal), without serde's
//! generic path, which was ~4 % of the worker's CPU per small job (docs/benchmarks.md).
//!
//! Every field goes in declaration order, as serde's derive writes a struct map; the enums
//! as their wire names (`rmp_serde` writes a unit variant as its name string), which their
//! `as_str` gives under the same `rename_all` rule.

use super::{ErrorBody, JobResult, Timings};
use crate::msgpack_writer::Writer;
use crate::tensor::Tensor;

/// `result` as `rmp_serde` (`encode_sized`) writes it, into a buffer of `capacity` bytes.
pub(crate) fn write_job_result(result: &JobResult<'_>, capacity: usize) -> Vec<u8> {
    let mut w = Writer::with_capacity(capacity);
    // The fields serde writes: the optional ones only when `skip_serializing_if` keeps them.
    let fields = 12
        + result.error.is_some() as usize
        + !result.inputs_digest.is_empty() as usize
        + !result.trace_id.is_empty() as usize;
    w.map_len(fields);
    w.str("v");
    w.uint(result.v as u64);
    w.str("id");
    w.str(&result.id);
    w.str("status");
    w.str(result.status.as_str());
    w.str("model");
    w.str(&result.model);
    w.str("version");
    w.str(&result.version);
    w.str("outputs");
    w.array_len(result.outputs.len());
    for t in &result.outputs {
        tensor(&mut w, t);
    }
    if let Some(e) = &result.error {
        w.str("error");
        error(&mut w, e);
    }
    w.str("meta");
    w.map_len(result.meta.len());
    for (k, v) in &result.meta {
        w.str(k);
        w.str(v);
    }
    w.str("worker");
    w.str(&result.worker);
    if !result.inputs_digest.is_empty() {
        w.str("inputs_digest");
        w.str(&result.inputs_digest);
    }
    if !result.trace_id.is_empty() {
        w.str("trace_id");
        w.str(&result.trace_id);
    }
    w.str("cached");
    w.bool(result.cached);
    w.str("attempts");
    w.uint(result.attempts as u64);
    w.str("timings");
    timings(&mut w, &result.timings);
    w.str("completed_at_ms");
    w.uint(result.completed_at_ms);
    w.into_bytes()
}

/// Shape dims are signed on the wire, so they take `write_sint`'s forms; data is bin
/// (`serde_bytes`), not an array of integers.
fn tensor(w: &mut Writer, t: &Tensor<'_>) {
    w.map_len(3);
    w.str("dtype");
    w.str(t.dtype.as_str());
    w.str("shape");
    w.array_len(t.shape.len());
    for &d in &t.shape {
        w.sint(d);
    }
    w.str("data");
    w.bin(&t.data);
}

fn error(w: &mut Writer, e: &ErrorBody) {
    w.map_len(2);
    w.str("code");
    w.str(e.code.as_str());
    w.str("message");
    w.str(&e.message);
}

fn timings(w: &mut Writer, t: &Timings) {
    w.map_len(4);
    w.str("queued_ms");
    w.f64(t.queued_ms);
    w.str("batch_size");
    w.uint(t.batch_size as u64);
    w.str("compute_ms");
    w.f64(t.compute_ms);
    w.str("total_ms");
    w.f64(t.total_ms);
}

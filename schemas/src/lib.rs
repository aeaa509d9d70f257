//! The wire contract of jetinfer, shared by every process and by clients.
//!
//! This is a leaf crate: types, names, limits and validation, and no I/O.
//!
//! - [`tensor`]: one sample's tensor (`dtype`, `shape`, borrowed `data` bytes) and [`DType`].
//! - [`job`]: the job a producer publishes, and [`job::decode_job`] which turns raw bytes
//!   into a validated job or a typed [`JobError`].
//! - [`result`]: the result stored in Redis and its timings.
//! - [`worker`]: heartbeats and the dispatcher ↔ worker run request/reply.
//! - [`names`]: subjects, stream and Redis key builders, [`Priority`].
//! - [`error`]: the stable error codes.
//! - [`limits`]: size limits and the identifier rules.
//! - [`route`]: which served model a job may run on ([`route_matches`]).
//! - [`registry`]: the model registry's declarations (NATS KV values) and the check of a
//!   job's model and version against them.
//! - [`routing`]: which version a job that names none runs on (weights over 1,000 buckets).
//!
//! Every message is a MessagePack map written with `rmp_serde::to_vec_named`; unknown keys
//! are ignored and fields added later are `#[serde(default)]`, so old readers keep working.

pub mod error;
pub mod inputs_ref;
pub mod job;
pub mod limits;
mod msgpack_reader;
mod msgpack_writer;
pub mod names;
pub mod partitions;
pub mod registry;
pub mod result;
pub mod route;
pub mod routing;
pub mod tensor;
pub mod worker;

pub use error::{ErrorCode, JobError};
pub use inputs_ref::InputsRef;
pub use job::{decode_job, Job};
pub use limits::Limits;
pub use names::{Keys, Priority};
pub use result::{trace_id_of, CachedOutputs, ErrorBody, JobResult, Status, Timings};
pub use route::{route_matches, Route};
pub use tensor::{DType, Tensor};

/// The schema version every message carries in its `v` field.
pub const SCHEMA_VERSION: u32 = 1;

/// Encodes any wire type as a MessagePack map (field names, not positions).
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // A result or a reply is a few hundred bytes: starting there spares the buffer the
    // six doublings from empty (reallocations were ~5 % of a worker's CPU per small job).
    encode_sized(value, 256)
}

/// [`encode`] into a buffer that starts with `capacity` bytes (the expected size, e.g.
/// the payloads a run request carries plus room for the rest).
pub fn encode_sized<T: serde::Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity);
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut buf).with_struct_map())
        .expect("encoding a wire type into a Vec cannot fail: this is a bug");
    buf
}

/// Milliseconds since the Unix epoch from the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

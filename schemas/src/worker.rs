//! Dispatcher ↔ worker messages (core NATS): heartbeats and run requests/replies.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::names::Priority;
use crate::tensor::DType;

/// The hand-written reader and writer of run requests ([`RunRequest::decode`],
/// [`RunRequest::encode_sized`]).
mod run_request_reader;
mod run_request_writer;

/// One input of a model: dtype and per-sample shape, `-1` for a dynamic dimension.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub dtype: DType,
    pub shape: Vec<i64>,
}

/// A model a worker has loaded and warmed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub max_batch_size: u32,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// Recent forward time of one batch (moving average, ms), once a batch has run; the
    /// dispatcher derives its per-bundle timeout from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_ms: Option<f64>,
}

/// Sent by each worker on `jetinfer.workers.heartbeat` every second.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub v: u32,
    /// Unique per worker process; part of its run subject.
    pub worker: String,
    pub models: Vec<ModelInfo>,
    /// Jobs the worker accepts at once (queued in its batchers plus running).
    pub slots: u32,
    /// Slots free when the heartbeat was sent.
    pub free_slots: u32,
    /// Devices in use, e.g. `"cuda:0"`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Memory in use on the CUDA devices the worker serves from, bytes, summed over them (all
    /// processes on those devices: the CUDA driver's `cuMemGetInfo`); absent on CPU.
    #[serde(default)]
    pub gpu_memory_bytes: Option<u64>,
    /// False while the worker drains for shutdown: send it nothing new.
    #[serde(default = "yes")]
    pub accepting: bool,
    #[serde(default)]
    pub sent_at_ms: u64,
    /// Versions the worker was asked to load (`--registry`) and refused, with why; empty
    /// (and left out) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_errors: Vec<LoadFailure>,
    /// What the worker measured over its last window (served rates, busy time, capacity,
    /// device memory): the autoscaling inputs of docs/scale-out.md. Absent from workers
    /// that predate it (or measured nothing yet); dispatchers then fall back to `batch_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<WorkerLoad>,
}

/// A worker's measured load: per model it serves and per device it uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WorkerLoad {
    /// Length of the window the rates and fractions cover, seconds (shorter just after
    /// the worker started).
    #[serde(default)]
    pub window_s: f64,
    #[serde(default)]
    pub models: Vec<ModelLoad>,
    #[serde(default)]
    pub devices: Vec<DeviceLoad>,
}

/// One served model version's measured load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelLoad {
    pub name: String,
    pub version: String,
    /// Jobs run through a forward per second over the window.
    pub served_per_s: f64,
    /// Share of the window the model's executor threads spent in its forwards (averaged
    /// over its threads: 1 = every thread of the model busy all the time).
    pub busy: f64,
    /// Jobs/s the model's threads would run at full batches, from the batch times measured
    /// at the sizes seen (a fit of time against batch size); `None` until measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_per_s: Option<f64>,
}

/// One device's measured load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DeviceLoad {
    /// `"cpu"`, `"cuda:0"`, …
    pub device: String,
    /// Share of the window during which at least one of the device's executor threads was
    /// in a forward.
    pub busy: f64,
    /// Memory in use on the device (all processes) and its size, bytes; absent on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
}

/// A model version a worker refused to load, and why (an unreadable file, a sha256
/// mismatch, a libtorch error while loading or warming it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LoadFailure {
    pub name: String,
    pub version: String,
    pub device: String,
    pub error: String,
}

fn yes() -> bool {
    true
}

/// One job inside a run request: the producer's job message untouched, plus what the
/// dispatcher learned about it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunJob {
    /// The job message exactly as published (MessagePack), decoded again by the worker.
    /// (`bytes::Bytes` serialises as MessagePack bin.)
    pub payload: Bytes,
    pub priority: Priority,
    /// Effective absolute deadline (Unix ms, dispatcher's clock): the job's own or the
    /// priority's default.
    pub deadline_ms: u64,
    /// Time left until the deadline when the request was sent, ms. Workers judge expiry by
    /// this (relative to their own receipt), so a worker's clock skew cannot expire jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// When JetStream stored the message (Unix ms), for queue-time accounting.
    pub published_ms: u64,
    /// Delivery attempt, 1 on the first.
    pub attempt: u32,
    /// The job has lost a run before (its worker died or timed out): run it in a batch of
    /// its own, so a job that kills workers cannot take innocent batch-mates with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspect: bool,
    /// Nobody has looked for a result already stored under the job's id (a first delivery
    /// goes from the dispatcher's intake straight to scheduling): a result the worker finds
    /// there, not its own write, is reported [`RunOutcome::Existing`], so that the
    /// dispatcher can tell a resubmission from a reused id. Unset, such a job is reported
    /// `Stored`, as by workers that predate the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_existing: bool,
    /// W3C trace context of the producer, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with `traceparent` (vendor data), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// A bundle of jobs for one worker, sent as a request to `jetinfer.worker.<id>.run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunRequest {
    pub v: u32,
    pub jobs: Vec<RunJob>,
}

impl RunRequest {
    /// The request as [`crate::encode`] writes it (a MessagePack map), byte for byte,
    /// into a buffer of `capacity` bytes (the payloads plus room for the other fields).
    pub fn encode_sized(&self, capacity: usize) -> Vec<u8> {
        run_request_writer::write_run_request(self, capacity)
    }

    /// Decodes a run request whose job payloads share `bytes`' buffer: by hand for the
    /// shape dispatchers write (`worker/run_request_reader.rs`), else with `rmp_serde`
    /// (which copies each payload, and has the last word on any other shape or error).
    pub fn decode(bytes: &Bytes) -> Result<RunRequest, rmp_serde::decode::Error> {
        match run_request_reader::read_run_request(bytes) {
            Some(request) => Ok(request),
            None => rmp_serde::from_slice(bytes),
        }
    }
}

/// What happened to one job of a run request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// A result is stored in Redis (this run's, or an earlier one's): ack it.
    Stored,
    /// Not run (worker draining, full, or the store unreachable): schedule it again.
    Retry,
    /// Could not run on this worker (it cannot read the job, or its executor is gone):
    /// schedule it again, counting one attempt towards `poison`.
    Failed,
    /// A result was already stored under the job's id, not by this run (whose result was
    /// discarded: first result wins). Only for jobs sent with `report_existing`: the
    /// dispatcher compares the stored result with the job, and acks it (a resubmission) or
    /// refuses it as a conflict (another job under a reused id).
    Existing,
}

/// The worker's reply, sent only after every stored result is in Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RunReply {
    pub v: u32,
    /// In the order of the request's jobs.
    pub outcomes: Vec<RunOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    /// Old and new processes interoperate: a heartbeat without `load` decodes to `None`,
    /// and one with it decodes in a reader that does not know the field (serde ignores
    /// unknown map keys), here simulated by a struct without it.
    #[test]
    fn heartbeat_load_is_optional_both_ways() {
        #[derive(Serialize, Deserialize)]
        struct OldHeartbeat {
            v: u32,
            worker: String,
            models: Vec<ModelInfo>,
            slots: u32,
            free_slots: u32,
        }
        let old = OldHeartbeat {
            v: 1,
            worker: "w".into(),
            models: vec![],
            slots: 4,
            free_slots: 4,
        };
        let hb: Heartbeat = rmp_serde::from_slice(&encode(&old)).unwrap();
        assert_eq!(hb.load, None);
        let load = WorkerLoad {
            window_s: 10.0,
            models: vec![ModelLoad {
                name: "m".into(),
                version: "1".into(),
                served_per_s: 12.5,
                busy: 0.25,
                capacity_per_s: Some(50.0),
            }],
            devices: vec![DeviceLoad {
                device: "cuda:0".into(),
                busy: 0.5,
                memory_used_bytes: Some(1 << 30),
                memory_total_bytes: Some(80 << 30),
            }],
        };
        let new = Heartbeat {
            load: Some(load.clone()),
            ..hb
        };
        let bytes = encode(&new);
        assert_eq!(
            rmp_serde::from_slice::<Heartbeat>(&bytes).unwrap().load,
            Some(load)
        );
        let seen_by_old: OldHeartbeat = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(seen_by_old.slots, 4);
    }

    #[test]
    fn run_request_round_trip_keeps_payload_bytes() {
        let req = RunRequest {
            v: 1,
            jobs: vec![RunJob {
                payload: Bytes::from_static(b"\x80"),
                priority: Priority::P1,
                deadline_ms: 10,
                remaining_ms: Some(5),
                published_ms: 5,
                attempt: 1,
                suspect: false,
                report_existing: true,
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                tracestate: Some("vendor=1".into()),
            }],
        };
        let back: RunRequest = rmp_serde::from_slice(&encode(&req)).unwrap();
        assert_eq!(back, req);
        let reply = RunReply {
            v: 1,
            outcomes: vec![RunOutcome::Stored, RunOutcome::Retry, RunOutcome::Existing],
        };
        assert_eq!(
            rmp_serde::from_slice::<RunReply>(&encode(&reply)).unwrap(),
            reply
        );
    }
}

//! What crosses core NATS between the dispatcher and workers: a run request (a bundle of
//! job payloads) decoded and its jobs decoded and validated as the worker's service does,
//! the reply the dispatcher decodes, and heartbeats, which the dispatcher reads from
//! anybody who can publish on `jetinfer.workers.heartbeat`.

#![no_main]

use jetinfer_schemas::worker::{Heartbeat, RunReply, RunRequest};
use jetinfer_schemas::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = rmp_serde::from_slice::<RunRequest>(data) {
        jetinfer_fuzz::reencodes(&request);
        let limits = Limits::default();
        for job in &request.jobs {
            let _ = jetinfer_fuzz::intake(&job.payload, &limits);
        }
    }
    if let Ok(reply) = rmp_serde::from_slice::<RunReply>(data) {
        jetinfer_fuzz::reencodes(&reply);
    }
    if let Ok(heartbeat) = rmp_serde::from_slice::<Heartbeat>(data) {
        jetinfer_fuzz::reencodes(&heartbeat);
    }
});

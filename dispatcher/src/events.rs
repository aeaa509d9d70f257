//! What the scheduler actor is told by the tasks around it: intake, the heartbeat
//! subscription and the bundles in flight.

use jetinfer_schemas::worker::Heartbeat;

use crate::job::HeldJob;

pub(crate) enum Command {
    /// Triaged jobs from intake (what one pull had delivered).
    Enqueue(Vec<HeldJob>),
    Heartbeat(Heartbeat),
    /// A bundle came back: its slots are free again; `retry` jobs go back to the queues.
    Returned {
        worker: String,
        sent: u32,
        /// Of `sent`, how many were suspects (lost a run before).
        suspects: u32,
        retry: Vec<HeldJob>,
        worker_failed: bool,
    },
}

//! What the scheduler actor is told by the tasks around it: intake, the heartbeat
//! subscription and the bundles in flight.

use jetinfer_schemas::worker::Heartbeat;

use crate::job::HeldJob;

pub(crate) enum Command {
    /// Jobs to queue: triaged jobs from intake, or a bundle's jobs to run again.
    Enqueue(Vec<HeldJob>),
    Heartbeat(Heartbeat),
    /// A bundle came back: its slots are free again (freed before its results are checked;
    /// its jobs to run again follow as `Enqueue` once sorted).
    Returned {
        worker: String,
        sent: u32,
        /// Of `sent`, how many were suspects (lost a run before).
        suspects: u32,
        worker_failed: bool,
    },
}

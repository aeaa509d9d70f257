//! What a model's batcher and its device's executor thread exchange: a batch in, per-job
//! outputs (or a sticky device error) back.

use std::time::Instant;

use jetinfer_schemas::{JobError, Tensor};
use tokio::sync::oneshot;

/// A batch for one model: per job, its input tensors (same shapes within a batch).
pub(crate) struct ExecBatch {
    /// Index of the model among the thread's models.
    pub model: usize,
    pub inputs: Vec<Vec<Tensor<'static>>>,
    /// The same inputs in pinned host memory, written by the batcher (CUDA devices).
    pub host: Option<crate::staging::HostBatch>,
    pub reply: oneshot::Sender<ExecOutput>,
}

/// Per job, its outputs or the error that stopped it; plus the batch's timing.
pub(crate) struct ExecOutput {
    pub started: Instant,
    pub compute_ms: f64,
    pub outputs: Vec<JobOutput>,
    /// A sticky device error: no job of this batch ran, and none will on this device.
    pub fatal: Option<StickyError>,
}

/// An error after which the device's CUDA context is unusable: nothing more runs there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.message)]
pub(crate) struct StickyError(pub JobError);

pub(crate) type JobOutput = Result<Vec<Tensor<'static>>, JobError>;

//! Why a worker could not start, or stopped with a failure.

use crate::config::ModelsFileError;
use crate::faults::FaultsError;
use crate::http::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    ModelsFile(#[from] ModelsFileError),
    #[error(transparent)]
    Nats(#[from] jetinfer_connect::ConnectError),
    #[error("cannot subscribe to this worker's run subject")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error(transparent)]
    Store(#[from] jetinfer_store::StoreError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Faults(#[from] FaultsError),
    #[error("no model could be loaded; see the errors above")]
    NoModels,
    /// The supervisor restarts the worker with a fresh CUDA context.
    #[error("worker {id} stopped after a sticky device error; its jobs go to other workers")]
    DeviceLost { id: String },
}

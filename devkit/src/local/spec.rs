//! What a [`super::LocalStack`] keeps to start more processes later, and where its logs go.

use std::path::{Path, PathBuf};

/// Everything needed to start another worker or dispatcher later.
#[derive(Debug)]
pub(super) struct Spec {
    pub models: PathBuf,
    pub dispatcher_args: Vec<String>,
    pub worker_args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// The URLs the dispatcher connects with, when not the stack's own.
    pub dispatcher_urls: Option<ProcessUrls>,
}

/// The NATS and Redis URLs one process connects with, e.g. with credentials of its own role
/// rather than the stack's. `Debug` hides the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessUrls {
    pub nats: String,
    pub redis: String,
}

impl ProcessUrls {
    pub fn new(nats: impl Into<String>, redis: impl Into<String>) -> Self {
        ProcessUrls {
            nats: nats.into(),
            redis: redis.into(),
        }
    }
}

impl std::fmt::Debug for ProcessUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessUrls")
            .field("nats", &jetinfer_connect::redact_url(&self.nats))
            .field("redis", &jetinfer_connect::redact_url(&self.redis))
            .finish()
    }
}

/// Where the process logs go: a kept folder, or a temporary one removed on drop.
#[derive(Debug)]
pub(super) enum LogDir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl LogDir {
    pub fn path(&self) -> &Path {
        match self {
            LogDir::Kept(p) => p,
            LogDir::Temp(t) => t.path(),
        }
    }
}

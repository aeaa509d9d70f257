//! What a [`super::LocalStack`] keeps to start more processes later, and where its logs go.

use std::path::{Path, PathBuf};

/// Everything needed to start another worker or dispatcher later.
#[derive(Debug)]
pub(super) struct Spec {
    pub models: PathBuf,
    pub dispatcher_args: Vec<String>,
    pub worker_args: Vec<String>,
    pub envs: Vec<(String, String)>,
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

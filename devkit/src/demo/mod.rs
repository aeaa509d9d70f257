//! The demo: [`session::run`] strings its parts together — which golden jobs to send
//! ([`plan`]), publishing them ([`publish`]), collecting their results ([`collect`]),
//! judging each ([`judge`]) and the per-priority report ([`report`]) — and tells the
//! person watching through an [`events::Observer`]. The `jetinfer demo` command prints it.

pub mod collect;
pub mod events;
pub mod judge;
pub mod options;
pub mod plan;
pub mod publish;
pub mod report;
pub mod session;

use std::path::PathBuf;

pub use events::{Event, Observer};
pub use judge::Tolerance;
pub use options::DemoOptions;
pub use session::run;

/// What can stop the demo before it has a verdict.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Golden(#[from] crate::golden::GoldenError),
    /// The golden manifest at this path names no model with samples.
    #[error("{} names no model with samples", .0.display())]
    NoSamples(PathBuf),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error("starting the local stack: {0}")]
    Stack(#[source] crate::local::LocalError),
    #[error("connecting to {nats_url} and {redis_url}: {source}")]
    Connect {
        nats_url: String,
        redis_url: String,
        #[source]
        source: jetinfer_client::ClientError,
    },
    #[error("reaching Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: jetinfer_client::StoreError,
    },
    /// Ctrl-C came before the demo finished.
    #[error("interrupted")]
    Interrupted,
}

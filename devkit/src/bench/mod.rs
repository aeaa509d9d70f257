//! The load generator and measurements behind `jetinfer bench`.
//!
//! - [`session::bench`]: a whole benchmark — the ceiling, then each system on its own
//!   stack ([`system`]) with the same load — returning the [`report::BenchReport`]; it tells
//!   the person watching through an [`events::Observer`].
//! - [`options`]: what a benchmark is asked to do; [`load`]: the offered load.
//! - [`payload`]: job inputs from a model's input spec in the models TOML.
//! - [`run`]: one measured run — open loop (fixed or Poisson arrivals per priority) or
//!   closed loop (N in flight) — timing each job from its intended send to its completion
//!   notice, and reading its result for batch size and status.
//! - [`record`]: HdrHistograms per priority, completions per second, errors.
//! - [`bare`]: the bare JetStream publish → pull → ack → Redis SET loop to compare with.
//! - [`baseline`]: a Python worker to compare with; [`ceiling`]: the model alone.
//! - [`report`]: the JSON report, its table, and the ratios the goals are stated in.
//! - [`svg`]: the plot (latency by percentile, throughput over time).
//! - [`cpu`]: CPU time of processes from /proc, for jobs per CPU-second.

pub mod bare;
pub mod baseline;
pub mod ceiling;
pub mod cpu;
pub mod events;
pub mod load;
pub mod options;
pub mod payload;
pub mod record;
pub mod report;
pub mod run;
pub mod session;
pub mod svg;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

pub use cpu::cpu_seconds;
pub use events::{Event, Observer};
pub use options::{BenchOptions, CeilingOptions, RunningStack, Storage};
pub use session::bench;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {path}: {source}")]
    ReadModels {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    ParseModels {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("model {name} is not in {path} (it has {known})")]
    UnknownModel {
        name: String,
        path: PathBuf,
        /// The models the file has, comma-separated.
        known: String,
    },
    #[error("creating {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error("starting the stack for {system}: {source}")]
    Stack {
        system: &'static str,
        #[source]
        source: crate::local::LocalError,
    },
    #[error("connecting to {nats_url} and {redis_url}: {source}")]
    Connect {
        nats_url: String,
        redis_url: String,
        #[source]
        source: jetinfer_client::ClientError,
    },
    /// A NATS or JetStream step (`what`) failed.
    #[error("{what}: {source}")]
    Nats {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
    /// The bare loop's own thread could not start.
    #[error("the bare loop: {0}")]
    BareLoop(String),
    #[error("--python-worker is empty")]
    EmptyCommand,
    #[error("the baseline worker made no consumer within {0:?}")]
    NoConsumer(Duration),
    #[error("pinning the load generator: {0}")]
    Pin(String),
    #[error("running {program}: {source}")]
    Run {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The ceiling run exited with an error; `why` holds the lines that say what.
    #[error("the ceiling run failed ({status}): {why}")]
    CeilingFailed {
        status: std::process::ExitStatus,
        why: String,
    },
    #[error("the ceiling run printed no JSON")]
    CeilingNoJson,
    #[error("the ceiling run's JSON: {0}")]
    CeilingJson(#[source] serde_json::Error),
}

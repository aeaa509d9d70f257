//! What a demo run is asked to do.

use std::path::PathBuf;
use std::time::Duration;

use super::judge::Tolerance;

/// Everything one `jetinfer demo` run needs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many jobs to publish.
    pub jobs: usize,
    /// Workers to start (local stack only).
    pub workers: usize,
    /// The workers' model file (local stack only); relative paths are also tried from the
    /// repository root.
    pub models: PathBuf,
    /// The folder with golden.json; relative paths are also tried from the repository root.
    pub golden: PathBuf,
    pub tolerance: Tolerance,
    /// Weights of P0, P1, P2.
    pub mix: [u32; 3],
    /// Publish acknowledgements awaited at once.
    pub in_flight: usize,
    /// How long to wait for all results [default: 60 s + 20 ms per job].
    pub timeout: Option<Duration>,
    /// Let the result cache answer repeated inputs.
    pub cache: bool,
    pub dispatcher_args: Vec<String>,
    pub worker_args: Vec<String>,
    /// Where the local stack's logs go [default: target/demo-logs/RUN].
    pub log_dir: Option<PathBuf>,
    /// How long the local stack may take to start.
    pub startup_timeout: Duration,
    /// Prefix of the Redis keys, for the client and the started processes.
    pub key_prefix: String,
    /// A running NATS to use instead of starting one.
    pub nats_url: Option<String>,
    /// A running Redis to use instead of starting one.
    pub redis_url: Option<String>,
}

impl DemoOptions {
    /// How long to wait for all results.
    pub fn results_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| Duration::from_secs_f64(60.0 + 0.02 * self.jobs as f64))
    }
}

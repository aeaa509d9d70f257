//! The Prometheus recorder behind the `metrics` macros.
//!
//! Processes call [`install`] once when `--metrics-addr` is set; without it no recorder
//! exists and every `metrics::counter!`/`histogram!` call is a no-op. Histograms get real
//! buckets (the exporter would otherwise render summaries, which cannot be aggregated
//! across workers): latencies in seconds by the `_seconds` suffix, batch sizes by
//! `_jobs` (a number of jobs).
//!
//! Installing also sets the `jetinfer_build_info` gauge (1, labelled with the service and
//! the version) and describes the process metrics of the `metrics-process` crate
//! (`jetinfer_process_cpu_seconds_total`, `_resident_memory_bytes`, `_open_fds`, …), which
//! [`Metrics::render`] refreshes from the operating system on each scrape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_process::Collector;

/// Latency buckets, seconds: sub-millisecond forwards up to the 300 s P2 deadline.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Batch-size buckets (jobs per forward).
pub const JOBS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The gauge that names the running build: always 1, labels `service` and `version`.
pub const BUILD_INFO: &str = "jetinfer_build_info";

/// The prefix of the process metrics (`jetinfer_process_…`): every metric a jetinfer
/// process exports is named `jetinfer_<name>_<unit>`.
pub const PROCESS_PREFIX: &str = "jetinfer_";

/// The version in `jetinfer_build_info` (every jetinfer crate shares the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often histogram buffers are folded into the rendered state.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A bucket list is empty, or another recorder is installed already.
    #[error("cannot install the Prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

/// The installed recorder: renders the Prometheus text, process metrics refreshed.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: Collector,
}

impl Metrics {
    /// Reads the process metrics from the operating system, then renders every metric in
    /// the Prometheus text format.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }

    /// The exporter's handle (renders without refreshing the process metrics).
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }
}

/// Set once the recorder is installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether this process records metrics ([`install`] ran). Without a recorder every
/// `metrics` macro is a no-op, yet still builds its key (label strings, a `Vec`): the job
/// paths check this first so a process without `--metrics-addr` spends nothing per job on
/// metrics. Installing happens at start, before any job, so counts stay consistent.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Installs the global recorder for the service [`crate::init`] recorded (see
/// [`install_for`]); needs a tokio runtime.
pub fn install() -> Result<Metrics, MetricsError> {
    install_for(&crate::service_name())
}

/// Installs the global recorder, sets `jetinfer_build_info{service, version}` to 1,
/// describes the process metrics and starts the recorder's upkeep task (needs a tokio
/// runtime).
pub fn install_for(service: &str) -> Result<Metrics, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_jobs".into()), JOBS_BUCKETS)?
        .install_recorder()?;
    INSTALLED.store(true, Ordering::Relaxed);
    metrics::describe_gauge!(
        BUILD_INFO,
        "always 1; the labels name the service and the version running"
    );
    metrics::gauge!(BUILD_INFO, "service" => service.to_string(), "version" => VERSION).set(1.0);
    let process = Collector::new(PROCESS_PREFIX);
    process.describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Metrics { handle, process })
}

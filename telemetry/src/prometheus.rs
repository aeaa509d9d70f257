//! The Prometheus recorder behind the `metrics` macros.
//!
//! Processes call [`install`] once when `--metrics-addr` is set; without it no recorder
//! exists and every `metrics::counter!`/`histogram!` call is a no-op. Histograms get real
//! buckets (the exporter would otherwise render summaries, which cannot be aggregated
//! across workers): latencies in seconds by the `_seconds` suffix, batch sizes by
//! `_jobs` (a number of jobs).

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: sub-millisecond forwards up to the 300 s P2 deadline.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Batch-size buckets (jobs per forward).
pub const JOBS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histogram buffers are folded into the rendered state.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global recorder and starts its upkeep task (needs a tokio runtime).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_jobs".into()), JOBS_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

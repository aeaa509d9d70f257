//! What a benchmark run measured: latency histograms per priority (HdrHistogram),
//! completions per second per priority, batch sizes, and errors.
//!
//! Two latencies are kept per job. `notice`: from the job's *intended* send time (open loop:
//! its slot in the arrival schedule, so a publisher that falls behind shows up as latency
//! instead of hiding it) to the moment its completion notice `jetinfer.done.<id>` reached
//! the benchmark; the notice is published only after the result is stored, so the result
//! is readable in Redis by then. Monotonic clock, microseconds. `stored`: the result's own
//! `completed_at_ms` minus the client's wall clock at publish (millisecond resolution,
//! same machine's clock), as a cross-check that needs no notice.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold, µs (values above are clamped): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;

/// Latency histograms of one priority (or all).
#[derive(Clone)]
pub struct Lat {
    pub notice_us: Histogram<u64>,
    pub stored_ms: Histogram<u64>,
}

impl Lat {
    fn new() -> Lat {
        Lat {
            notice_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid: this is a bug"),
            stored_ms: Histogram::new_with_bounds(1, MAX_LATENCY_US / 1000, 3)
                .expect("constant histogram bounds are valid: this is a bug"),
        }
    }
}

/// Everything recorded during the measured window of a run.
pub struct Recorder {
    /// Index 0..3 = P0..P2.
    pub lat: [Lat; 3],
    /// Completions per whole second since the start, per priority (including warm-up).
    pub per_second: Vec<[u64; 3]>,
    /// Jobs started inside the measured window and completed (their latency is recorded).
    pub completed: [u64; 3],
    /// Completions (of any job) seen inside the measured window: the throughput.
    pub window_completed: [u64; 3],
    pub ok: u64,
    /// Error results by code.
    pub errors: std::collections::BTreeMap<String, u64>,
    pub publish_errors: u64,
    pub batch_size_sum: u64,
    pub batch_size_n: u64,
    pub compute_ms_sum: f64,
    pub queued_ms_sum: f64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            lat: [Lat::new(), Lat::new(), Lat::new()],
            per_second: Vec::new(),
            completed: [0; 3],
            window_completed: [0; 3],
            ok: 0,
            errors: Default::default(),
            publish_errors: 0,
            batch_size_sum: 0,
            batch_size_n: 0,
            compute_ms_sum: 0.0,
            queued_ms_sum: 0.0,
        }
    }
}

impl Recorder {
    /// A completion notice seen `secs` after the start (for the timeline), and its
    /// latency (for the histograms, when the job is inside the measured window).
    pub fn notice(&mut self, prio: usize, secs: f64, in_window: bool, latency_us: Option<u64>) {
        let bin = secs.max(0.0) as usize;
        if self.per_second.len() <= bin {
            self.per_second.resize(bin + 1, [0; 3]);
        }
        self.per_second[bin][prio] += 1;
        if in_window {
            self.window_completed[prio] += 1;
        }
        if let Some(us) = latency_us {
            self.completed[prio] += 1;
            let _ = self.lat[prio].notice_us.record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Latency by the stored result's clock, ms.
    pub fn stored(&mut self, prio: usize, ms: u64) {
        let _ = self.lat[prio]
            .stored_ms
            .record(ms.clamp(1, MAX_LATENCY_US / 1000));
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram whose unit is `unit_ms` milliseconds.
    pub fn of(h: &Histogram<u64>, unit_ms: f64) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 * unit_ms;
        Percentiles {
            count: h.len(),
            mean: h.mean() * unit_ms,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 * unit_ms,
        }
    }
}

/// The latency distribution as (percentile, ms) points for the plot: 0–99.99 % on a
/// log-of-(1-q) scale, as HdrHistogram's own plots do.
pub fn distribution(h: &Histogram<u64>, unit_ms: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut nines = 0.0f64;
    while nines <= 4.0 {
        let q = 1.0 - 10f64.powf(-nines);
        points.push((q * 100.0, h.value_at_quantile(q) as f64 * unit_ms));
        nines += 0.1;
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_summarises() {
        let mut r = Recorder::default();
        for i in 1..=1000u64 {
            r.notice(1, i as f64 / 1000.0, true, Some(i * 10));
        }
        r.notice(0, 2.5, false, None);
        assert_eq!(r.completed, [0, 1000, 0]);
        assert_eq!(r.per_second.len(), 3);
        assert_eq!(r.per_second[2][0], 1);
        let p = Percentiles::of(&r.lat[1].notice_us, 1e-3);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 5.0).abs() < 0.05, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.05, "{p:?}");
        let d = distribution(&r.lat[1].notice_us, 1e-3);
        assert!(d.len() > 30 && d.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}

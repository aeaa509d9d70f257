//! Load meters for autoscaling (docs/scale-out.md): per device, the time its executor
//! threads spend in forwards ([`BusyMeter`]); per model, the jobs it ran, the time its
//! forwards took and, from a fit of batch time against batch size, the jobs/s it would
//! run at full batches ([`ModelMeter`]). The heartbeat reads both every period and
//! announces what they measured over the last [`WINDOW`] (`Heartbeat::load`), and sets
//! the worker's gauges from the same figures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rates and fractions cover this much history: long enough that one slow batch or a
/// bursty producer does not swing them, short enough to follow a change of load.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Fewest batches in the window before the batch-time fit is trusted.
const MIN_FIT_BATCHES: usize = 4;

/// Time during which at least one of a device's executor threads is in a forward (several
/// instances overlapping count once: the device is busy, not busier).
#[derive(Debug)]
pub(crate) struct BusyMeter(Mutex<Busy>);

#[derive(Debug)]
struct Busy {
    running: u32,
    since: Instant,
    total: Duration,
    /// `(when, total busy then)` samples for the windowed fraction.
    samples: VecDeque<(Instant, Duration)>,
}

impl Default for BusyMeter {
    fn default() -> Self {
        let now = Instant::now();
        BusyMeter(Mutex::new(Busy {
            running: 0,
            since: now,
            total: Duration::ZERO,
            samples: VecDeque::from([(now, Duration::ZERO)]),
        }))
    }
}

impl BusyMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Busy> {
        // A panic elsewhere while holding it leaves plain numbers behind: still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A forward started on one of the device's threads.
    pub fn begin(&self) {
        let mut b = self.lock();
        if b.running == 0 {
            b.since = Instant::now();
        }
        b.running += 1;
    }

    /// A forward ended.
    pub fn end(&self) {
        let mut b = self.lock();
        b.running = b.running.saturating_sub(1);
        if b.running == 0 {
            let ran = b.since.elapsed();
            b.total += ran;
        }
    }

    /// Share of the last [`WINDOW`] (or of the time since the meter was made, if shorter)
    /// the device was busy, counting a forward still running up to `now`.
    pub fn fraction(&self, now: Instant) -> f64 {
        let mut b = self.lock();
        let total = b.total
            + if b.running > 0 {
                now.saturating_duration_since(b.since)
            } else {
                Duration::ZERO
            };
        b.samples.push_back((now, total));
        // Keep as base the newest sample at least WINDOW old.
        while b.samples.len() > 2 && now.saturating_duration_since(b.samples[1].0) >= WINDOW {
            b.samples.pop_front();
        }
        let (t0, busy0) = b.samples[0];
        let span = now.saturating_duration_since(t0).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        ((total.saturating_sub(busy0)).as_secs_f64() / span).clamp(0.0, 1.0)
    }
}

/// What one model's meter measured over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ModelReading {
    pub served_per_s: f64,
    /// Share of the window its threads spent in its forwards, averaged over its threads.
    pub busy: f64,
    /// Jobs/s at full batches on all its threads; `None` before any batch ran.
    pub capacity_per_s: Option<f64>,
}

/// The batches of one model (all its threads) over the window.
#[derive(Debug)]
pub(crate) struct ModelMeter(Mutex<Batches>);

#[derive(Debug)]
struct Batches {
    started: Instant,
    /// `(finished, jobs, forward ms)` per batch.
    recent: VecDeque<(Instant, u32, f64)>,
    /// Threads that run the model (the batcher's lanes).
    lanes: u32,
    /// The last trusted fit of batch ms = a + b × jobs: capacity is a property of the
    /// model and device, so it outlives the load that revealed it.
    fit: Option<(f64, f64)>,
}

impl Default for ModelMeter {
    fn default() -> Self {
        ModelMeter(Mutex::new(Batches {
            started: Instant::now(),
            recent: VecDeque::new(),
            lanes: 1,
            fit: None,
        }))
    }
}

impl ModelMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Batches> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch of `jobs` ran in `ms` on one of the model's `lanes` threads.
    pub fn record(&self, jobs: usize, ms: f64, lanes: usize) {
        let now = Instant::now();
        let mut b = self.lock();
        b.lanes = lanes.max(1) as u32;
        b.recent.push_back((now, jobs as u32, ms));
        prune(&mut b.recent, now);
    }

    /// The model's figures over the window ending `now`, at batches of up to `max_batch`.
    pub fn read(&self, now: Instant, max_batch: u32) -> ModelReading {
        let mut b = self.lock();
        prune(&mut b.recent, now);
        let span = now
            .saturating_duration_since(b.started)
            .min(WINDOW)
            .as_secs_f64()
            .max(1e-3);
        let jobs: f64 = b.recent.iter().map(|r| f64::from(r.1)).sum();
        let ms: f64 = b.recent.iter().map(|r| r.2).sum();
        let lanes = f64::from(b.lanes);
        let sizes: Vec<(f64, f64)> = b.recent.iter().map(|r| (f64::from(r.1), r.2)).collect();
        if let Some(fit) = fit_batch_time(&sizes, max_batch) {
            b.fit = Some(fit);
        }
        let max = f64::from(max_batch.max(1));
        let capacity_per_s = match b.fit {
            Some((a, slope)) if a + slope * max > 0.0 => {
                Some(lanes * max * 1e3 / (a + slope * max))
            }
            // One batch size seen so far: assume time grows with jobs from zero, a lower
            // bound (a fixed cost per batch would make full batches cheaper per job).
            _ if jobs > 0.0 && ms > 0.0 => Some(lanes * jobs * 1e3 / ms),
            _ => None,
        };
        ModelReading {
            served_per_s: jobs / span,
            busy: (ms / 1e3 / (span * lanes)).clamp(0.0, 1.0),
            capacity_per_s,
        }
    }
}

fn prune(recent: &mut VecDeque<(Instant, u32, f64)>, now: Instant) {
    while recent
        .front()
        .is_some_and(|r| now.saturating_duration_since(r.0) > WINDOW)
    {
        recent.pop_front();
    }
}

/// Least-squares fit of batch ms = a + b × jobs over `(jobs, ms)` samples, with a, b ≥ 0;
/// `None` when the samples cannot tell a fixed cost from a per-job one (too few, or one
/// size only) — except batches all at `max_batch`, whose mean time is the answer itself.
pub(crate) fn fit_batch_time(samples: &[(f64, f64)], max_batch: u32) -> Option<(f64, f64)> {
    if samples.len() < MIN_FIT_BATCHES {
        return None;
    }
    let n = samples.len() as f64;
    let mean_x = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let var: f64 = samples.iter().map(|s| (s.0 - mean_x).powi(2)).sum();
    if var < 1e-9 {
        return (mean_x >= f64::from(max_batch)).then_some((mean_y, 0.0));
    }
    let cov: f64 = samples
        .iter()
        .map(|s| (s.0 - mean_x) * (s.1 - mean_y))
        .sum();
    let b = cov / var;
    let a = mean_y - b * mean_x;
    // Noise can tilt the line past the origin either way: clamp to the nearer sensible
    // model (all fixed cost, or all per job).
    Some(if b < 0.0 {
        (mean_y, 0.0)
    } else if a < 0.0 {
        (0.0, mean_y / mean_x)
    } else {
        (a, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_separates_fixed_and_per_job_cost() {
        // 20 ms + 1 ms per job, sizes 1..8.
        let s: Vec<_> = (1..=8).map(|n| (n as f64, 20.0 + n as f64)).collect();
        let (a, b) = fit_batch_time(&s, 32).unwrap();
        assert!((a - 20.0).abs() < 1e-9 && (b - 1.0).abs() < 1e-9, "{a} {b}");
        // One size only: unknown, unless it is the largest.
        assert_eq!(fit_batch_time(&[(2.0, 22.0); 5], 32), None);
        assert_eq!(fit_batch_time(&[(32.0, 52.0); 5], 32), Some((52.0, 0.0)));
        assert_eq!(fit_batch_time(&s[..3], 32), None, "too few batches");
    }

    #[test]
    fn model_meter_reports_rate_busy_and_capacity() {
        let m = ModelMeter::default();
        // Pretend the meter started a window ago, so the span is the full window.
        m.lock().started -= WINDOW;
        for n in 1..=8 {
            m.record(n, 20.0 + n as f64, 2);
        }
        let r = m.read(Instant::now(), 32);
        // 36 jobs in 10 s; 196 ms of forwards over 2 threads × 10 s.
        assert!((r.served_per_s - 3.6).abs() < 1e-6, "{r:?}");
        assert!((r.busy - 0.196 / 20.0).abs() < 1e-6, "{r:?}");
        // 2 threads × 32 jobs / 52 ms.
        let want = 2.0 * 32.0 * 1e3 / 52.0;
        assert!((r.capacity_per_s.unwrap() - want).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn busy_meter_counts_overlapping_forwards_once() {
        let m = BusyMeter::default();
        std::thread::sleep(Duration::from_millis(20));
        assert!(m.fraction(Instant::now()) < 0.01, "idle");
        m.begin();
        m.begin();
        std::thread::sleep(Duration::from_millis(60));
        m.end();
        m.end();
        let f = m.fraction(Instant::now());
        // About 60 of 80 ms; a loaded machine may stretch either sleep.
        assert!((0.4..=1.0).contains(&f), "{f}");
    }
}

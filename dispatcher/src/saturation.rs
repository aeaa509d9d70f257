//! The per-model saturation score and the signals it combines (docs/scale-out.md,
//! "Autoscaling"): from the JetStream lag of each model ([`crate::lag`] reads it) and the
//! load the workers measure and announce in their heartbeats (`Heartbeat::load`: per model
//! served jobs/s, busy share and fitted capacity; per device busy share and memory).
//!
//! Per model: capacity = Σ over its workers of the worker's capacity — the larger of what
//! its batch-time fit predicts at full batches and what it actually ran per busy second
//! (served / busy), or `max_batch_size / batch_ms` from a worker that reports no load;
//! arrival = served + the lag's slope (what arrives is what is served plus what the
//! backlog grows by); score = arrival / capacity + lag / (capacity × drain target). GPU
//! memory headroom is a separate gauge: it says where a model may be placed, not how much
//! work there is. The arithmetic is in plain functions, tested without a server.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use jetinfer_schemas::worker::Heartbeat;
use metrics::{describe_gauge, gauge};

pub(crate) const MODEL_CAPACITY: &str = "jetinfer_model_capacity_jobs_per_second";
pub(crate) const MODEL_BUSY: &str = "jetinfer_model_busy_ratio";
pub(crate) const MODEL_SATURATION: &str = "jetinfer_model_saturation";
pub(crate) const MODEL_SERVED: &str = "jetinfer_model_served_jobs_per_second";
pub(crate) const MODEL_ARRIVAL: &str = "jetinfer_model_arrival_rate";
pub(crate) const MODEL_DEVICE_BUSY: &str = "jetinfer_model_device_busy_ratio";
pub(crate) const MODEL_MEMORY_HEADROOM: &str = "jetinfer_model_gpu_memory_headroom_ratio";

/// The lag's slope is taken over this much history, the span the workers' rates cover.
const SLOPE_WINDOW: Duration = Duration::from_secs(10);

/// Below this busy share a worker's served/busy ratio is too noisy to be a capacity
/// (a few small batches in the window).
const MIN_BUSY: f64 = 0.05;

/// One model's signals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelSignals {
    /// Jobs of the model in the streams (all priorities): waiting, held or running.
    pub lag: u64,
    /// Jobs/s its live workers can run (see the module doc); 0 when none has measured.
    pub capacity: f64,
    /// Share of the slots of the workers serving it that are taken (1 − free/slots).
    pub busy: f64,
    /// Jobs/s its workers ran over their last window (0 without reports).
    pub served: f64,
    /// served + the lag's slope, ≥ 0; `None` until the lag has two samples.
    pub arrival: Option<f64>,
    /// Mean over its reporting workers of the share of time their threads spent in its
    /// forwards; `None` when no worker reports load.
    pub device_busy: Option<f64>,
    /// Least free share of GPU memory over the devices of its workers; `None` on CPU.
    pub memory_headroom: Option<f64>,
    /// arrival / capacity + lag / (capacity × drain target); `None` without a capacity.
    pub saturation: Option<f64>,
}

/// What one worker can do for one model, and what it measured (summed over the versions
/// of the model it serves).
#[derive(Debug, Default, Clone, Copy)]
struct WorkerModel {
    capacity: f64,
    served: f64,
    busy: Option<f64>,
}

/// One worker's figures for each model it announces.
fn per_model(hb: &Heartbeat) -> BTreeMap<&str, WorkerModel> {
    let mut out: BTreeMap<&str, WorkerModel> = BTreeMap::new();
    for m in &hb.models {
        let measured = hb.load.as_ref().and_then(|l| {
            l.models
                .iter()
                .find(|x| x.name == m.name && x.version == m.version)
        });
        let fallback = m
            .batch_ms
            .filter(|ms| *ms > 0.0)
            .map_or(0.0, |ms| m.max_batch_size as f64 * 1000.0 / ms);
        let capacity = match measured {
            Some(x) => {
                let observed = if x.busy >= MIN_BUSY {
                    x.served_per_s / x.busy
                } else {
                    0.0
                };
                let fitted = x.capacity_per_s.unwrap_or(0.0);
                match fitted.max(observed) {
                    c if c > 0.0 => c,
                    _ => fallback,
                }
            }
            None => fallback,
        };
        let e = out.entry(m.name.as_str()).or_default();
        e.capacity += capacity;
        if let Some(x) = measured {
            e.served += x.served_per_s;
            e.busy = Some((e.busy.unwrap_or(0.0) + x.busy).min(1.0));
        }
    }
    out
}

/// The least free share of memory over the worker's devices that report it.
fn headroom(hb: &Heartbeat) -> Option<f64> {
    hb.load
        .as_ref()?
        .devices
        .iter()
        .filter_map(|d| {
            let (used, total) = (d.memory_used_bytes?, d.memory_total_bytes?);
            (total > 0).then(|| 1.0 - used.min(total) as f64 / total as f64)
        })
        .reduce(f64::min)
}

/// Per model: the signals from each model's lag (`lags`), the lag's slope (`slopes`,
/// jobs/s; absent until measured) and the live workers. A model that has lag but no
/// worker, or workers but no lag, is listed too.
pub(crate) fn model_signals(
    lags: &BTreeMap<String, u64>,
    slopes: &BTreeMap<String, f64>,
    workers: &[impl AsRef<Heartbeat>],
    drain_target: Duration,
) -> BTreeMap<String, ModelSignals> {
    #[derive(Default)]
    struct Acc {
        capacity: f64,
        served: f64,
        taken: u64,
        slots: u64,
        busy_sum: f64,
        reporting: u32,
        headroom: Option<f64>,
    }
    let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
    for hb in workers.iter().map(AsRef::as_ref) {
        let taken = hb.slots.saturating_sub(hb.free_slots) as u64;
        let room = headroom(hb);
        // A worker announcing one model in several versions (or on several devices) is
        // counted once per model for slots and memory.
        for (name, wm) in per_model(hb) {
            let a = acc.entry(name).or_default();
            a.capacity += wm.capacity;
            a.served += wm.served;
            a.taken += taken;
            a.slots += hb.slots as u64;
            if let Some(b) = wm.busy {
                a.busy_sum += b;
                a.reporting += 1;
            }
            if let Some(r) = room {
                a.headroom = Some(a.headroom.map_or(r, |h: f64| h.min(r)));
            }
        }
    }
    let names: BTreeSet<&str> = lags
        .keys()
        .map(String::as_str)
        .chain(acc.keys().copied())
        .collect();
    let drain = drain_target.as_secs_f64().max(1e-3);
    names
        .into_iter()
        .map(|name| {
            let lag = lags.get(name).copied().unwrap_or(0);
            let a = acc.remove(name).unwrap_or_default();
            let arrival = slopes.get(name).map(|s| (a.served + s).max(0.0));
            let saturation = (a.capacity > 0.0).then(|| {
                arrival.unwrap_or(a.served) / a.capacity + lag as f64 / (a.capacity * drain)
            });
            let signals = ModelSignals {
                lag,
                capacity: a.capacity,
                busy: if a.slots > 0 {
                    a.taken as f64 / a.slots as f64
                } else {
                    0.0
                },
                served: a.served,
                arrival,
                device_busy: (a.reporting > 0).then(|| a.busy_sum / f64::from(a.reporting)),
                memory_headroom: a.headroom,
                saturation,
            };
            (name.to_string(), signals)
        })
        .collect()
}

/// Per model, samples of its lag over [`SLOPE_WINDOW`], for the lag's slope.
#[derive(Debug, Default)]
pub(crate) struct LagSlopes {
    samples: BTreeMap<String, VecDeque<(Instant, u64)>>,
}

impl LagSlopes {
    /// Adds this refresh's lags (a model missing from `lags` has none: 0) and returns each
    /// model's slope, jobs/s, for those with two samples spanning some time.
    pub fn observe(&mut self, at: Instant, lags: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
        for name in lags.keys() {
            self.samples.entry(name.clone()).or_default();
        }
        let mut slopes = BTreeMap::new();
        self.samples.retain(|name, samples| {
            let lag = lags.get(name).copied().unwrap_or(0);
            samples.push_back((at, lag));
            while samples.len() > 2 && at.saturating_duration_since(samples[1].0) >= SLOPE_WINDOW {
                samples.pop_front();
            }
            let (t0, l0) = samples[0];
            let secs = at.saturating_duration_since(t0).as_secs_f64();
            if secs > 0.0 {
                slopes.insert(name.clone(), (lag as f64 - l0 as f64) / secs);
            }
            // A model gone from the streams for a whole window with nothing left: forget it.
            lag > 0 || samples.iter().any(|s| s.1 > 0) || secs < SLOPE_WINDOW.as_secs_f64()
        });
        slopes
    }
}

pub(crate) fn describe() {
    describe_gauge!(
        MODEL_CAPACITY,
        "Jobs/s the live workers serving the model can run: per worker the larger of its fitted full-batch capacity and served/busy (max_batch_size / batch_ms from workers that report no load), summed"
    );
    describe_gauge!(
        MODEL_BUSY,
        "Share of the slots of the workers serving the model that are taken, from their heartbeats"
    );
    describe_gauge!(
        MODEL_SATURATION,
        "arrival / capacity + model lag / (capacity x drain target); above 1 the model needs more workers; NaN without a measured capacity"
    );
    describe_gauge!(
        MODEL_SERVED,
        "Jobs/s the model's workers ran over their last 10 s, from their heartbeats"
    );
    describe_gauge!(
        MODEL_ARRIVAL,
        "Jobs/s arriving for the model: served + the slope of its lag over 10 s; NaN until measured"
    );
    describe_gauge!(
        MODEL_DEVICE_BUSY,
        "Mean share of time the model's workers' threads spent in its forwards (last 10 s); NaN without reports"
    );
    describe_gauge!(
        MODEL_MEMORY_HEADROOM,
        "Least free share of GPU memory over the devices of the model's workers; NaN on CPU"
    );
}

/// Sets the gauges of each model in `signals`, and zeroes those of `gone` (models no
/// longer served nor queued: nothing to scale for them).
pub(crate) fn publish<'a>(
    signals: &BTreeMap<String, ModelSignals>,
    gone: impl Iterator<Item = &'a String>,
) {
    let nan = f64::NAN;
    for (model, s) in signals {
        gauge!(MODEL_CAPACITY, "model" => model.clone()).set(s.capacity);
        gauge!(MODEL_BUSY, "model" => model.clone()).set(s.busy);
        gauge!(MODEL_SATURATION, "model" => model.clone()).set(s.saturation.unwrap_or(nan));
        gauge!(MODEL_SERVED, "model" => model.clone()).set(s.served);
        gauge!(MODEL_ARRIVAL, "model" => model.clone()).set(s.arrival.unwrap_or(nan));
        gauge!(MODEL_DEVICE_BUSY, "model" => model.clone()).set(s.device_busy.unwrap_or(nan));
        gauge!(MODEL_MEMORY_HEADROOM, "model" => model.clone())
            .set(s.memory_headroom.unwrap_or(nan));
    }
    for model in gone {
        for name in [
            MODEL_CAPACITY,
            MODEL_BUSY,
            MODEL_SATURATION,
            MODEL_SERVED,
            MODEL_ARRIVAL,
            MODEL_DEVICE_BUSY,
        ] {
            gauge!(name, "model" => model.clone()).set(0.0);
        }
    }
}

#[cfg(test)]
#[path = "saturation_tests.rs"]
mod tests;

//! Autoscaling signals on `/metrics`: queue lag, oldest-job age and arrival rate per
//! priority from JetStream, and per model the lag, the measured capacity and a saturation
//! score (docs/scale-out.md explains each and how to scale on them).
//!
//! Every `--autoscale-every-ms` (1 s) the exporter asks JetStream, per priority and partition
//! stream (summed over a priority's partitions), for the consumer's info (`num_pending + num_ack_pending`: the figure KEDA's nats-jetstream
//! scaler reads, so the two agree) and for the stream's info with per-subject counts (one
//! request: first timestamp, last sequence, and messages per `jetinfer.jobs.<p>.<model>`).
//! The streams have WorkQueue retention, so a message stays in the stream until acked and
//! the per-subject count is exactly that model's share of the lag; no per-model consumer
//! is needed. The per-model capacity, served and arrival rates and saturation score come
//! from those lags and the workers' heartbeats (`saturation.rs`).
//!
//! The arithmetic is in plain functions ([`ArrivalWindow`], `saturation::model_signals`)
//! so it is tested without a server; [`run`] only fetches and publishes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use jetinfer_schemas::names::{parse_job_subject, priority_filter};
use jetinfer_schemas::partitions::{partition_consumer, partition_stream};
use jetinfer_schemas::{now_ms, Priority};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::saturation::{model_signals, LagSlopes};
use crate::workers::WorkersView;

pub(crate) const QUEUE_LAG: &str = "jetinfer_queue_lag";
pub(crate) const OLDEST_AGE: &str = "jetinfer_queue_oldest_age_seconds";
pub(crate) const ARRIVAL_RATE: &str = "jetinfer_arrival_rate";
pub(crate) const MODEL_LAG: &str = "jetinfer_model_queue_lag";
pub(crate) const REFRESH_FAILURES: &str = "jetinfer_autoscale_refresh_failures_total";

/// The arrival rate is measured over this much history: one-second deltas of a bursty
/// producer would make the gauge (and anything scaling on it) jump.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How the exporter runs (from the dispatcher's flags).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub every: Duration,
    /// The backlog term of the saturation score: how fast a backlog should drain.
    pub drain_target: Duration,
    /// Partition streams per priority (`--partitions`): the figures are their sums.
    pub partitions: u16,
}

impl Settings {
    pub fn new(config: &crate::config::Config) -> Settings {
        Settings {
            every: Duration::from_millis(config.autoscale_every_ms),
            drain_target: Duration::from_secs(config.autoscale_drain_s),
            partitions: config.partitions,
        }
    }
}

/// Published jobs per second from the stream's `last_seq` samples over [`RATE_WINDOW`].
/// `last_seq` counts every stored message (de-duplicated publishes are not stored), and
/// acks do not change it, so its slope is the arrival rate whatever the workers do.
#[derive(Debug, Default)]
pub(crate) struct ArrivalWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl ArrivalWindow {
    /// Adds a sample and returns the rate over the window, `None` until two samples span
    /// some time. A `last_seq` that went down means the stream was recreated: start over.
    pub fn observe(&mut self, at: Instant, last_seq: u64) -> Option<f64> {
        if self.samples.back().is_some_and(|&(_, s)| s > last_seq) {
            self.samples.clear();
        }
        self.samples.push_back((at, last_seq));
        // The base of the slope is the newest sample at least RATE_WINDOW old: drop older
        // ones (while there is more history, the rate covers a shorter span).
        while self.samples.len() > 2
            && at.saturating_duration_since(self.samples[1].0) >= RATE_WINDOW
        {
            self.samples.pop_front();
        }
        let &(t0, s0) = self.samples.front()?;
        let secs = at.saturating_duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| (last_seq - s0) as f64 / secs)
    }
}

/// The model of a job subject of priority `p`, `jetinfer.jobs.<p>.<model>[.<partition>]`
/// (`None` for anything else).
fn model_of(subject: &str, p: Priority) -> Option<&str> {
    parse_job_subject(subject)
        .filter(|&(q, model)| q == p && !model.is_empty())
        .map(|(_, model)| model)
}

/// What one priority's streams and consumers (one per partition) say now, summed.
struct PrioritySample {
    lag: u64,
    oldest_age_s: f64,
    last_seq: u64,
    /// Messages in the stream per model.
    models: BTreeMap<String, u64>,
}

/// Why one refresh of a priority failed (logged and counted; the gauges keep their last
/// values, and the next tick tries again).
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("cannot look up stream {0}")]
    Stream(String, #[source] jetstream::context::GetStreamError),
    #[error("cannot read consumer info")]
    Consumer(#[from] jetstream::context::ConsumerInfoError),
    #[error("cannot read stream info")]
    Info(#[from] jetstream::stream::InfoError),
}

/// Asks JetStream about priority `p`: consumer info and stream info with subject counts of
/// each of its partitions (`streams`: one cached handle per partition), summed; the oldest
/// age is the oldest partition's.
async fn sample(
    js: &jetstream::Context,
    streams: &mut [Option<stream::Stream>],
    p: Priority,
) -> Result<PrioritySample, RefreshError> {
    let mut sum = PrioritySample {
        lag: 0,
        oldest_age_s: 0.0,
        last_seq: 0,
        models: BTreeMap::new(),
    };
    for (k, stream) in (0u16..).zip(streams.iter_mut()) {
        let handle = match stream {
            Some(s) => s,
            None => {
                let name = partition_stream(p, k);
                let found = js.get_stream(&name).await;
                stream.insert(found.map_err(|e| RefreshError::Stream(name, e))?)
            }
        };
        let consumer = handle.consumer_info(partition_consumer(p, k)).await?;
        let mut subjects = handle.info_with_subjects(priority_filter(p)).await?;
        let state = subjects.info.state.clone();
        while let Some((subject, count)) = subjects.try_next().await? {
            if let Some(model) = model_of(&subject, p) {
                *sum.models.entry(model.to_string()).or_insert(0) += count as u64;
            }
        }
        // WorkQueue retention: the first message still stored is the oldest job not yet
        // acked (waiting in JetStream, held here, or running on a worker).
        if state.messages > 0 {
            let first_ms = state.first_timestamp.unix_timestamp_nanos() / 1_000_000;
            let age_s = ((now_ms() as i128 - first_ms).max(0) as f64) / 1000.0;
            sum.oldest_age_s = sum.oldest_age_s.max(age_s);
        }
        sum.lag += consumer.num_pending + consumer.num_ack_pending as u64;
        sum.last_seq += state.last_sequence;
    }
    Ok(sum)
}

fn describe() {
    describe_gauge!(
        QUEUE_LAG,
        "Jobs of the priority not yet acked: the consumer's num_pending + num_ack_pending (what KEDA's nats-jetstream scaler reads)"
    );
    describe_gauge!(
        OLDEST_AGE,
        "Age of the oldest job of the priority not yet acked (the stream's first message), seconds; 0 when empty"
    );
    describe_gauge!(
        ARRIVAL_RATE,
        "Jobs published to the priority's stream per second, over the last 10 s (slope of the stream's last sequence)"
    );
    describe_gauge!(
        MODEL_LAG,
        "Jobs of the model not yet acked, by priority and model (the stream's per-subject count)"
    );
    describe_counter!(
        REFRESH_FAILURES,
        "Refreshes of the autoscaling signals that failed, by priority (the gauges keep their last values)"
    );
}

/// Refreshes the signals every `settings.every` until `shutdown`.
pub(crate) async fn run(
    js: jetstream::Context,
    workers: watch::Receiver<WorkersView>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    describe();
    crate::saturation::describe();
    let mut slopes = LagSlopes::default();
    for p in Priority::ALL {
        counter!(REFRESH_FAILURES, "priority" => p.as_str()).increment(0);
    }
    let partitions = usize::from(settings.partitions.max(1));
    let mut streams: [Vec<Option<stream::Stream>>; 3] =
        std::array::from_fn(|_| (0..partitions).map(|_| None).collect());
    let mut windows: [ArrivalWindow; 3] = Default::default();
    // Whether each priority's last refresh failed: a failure is logged when it starts and
    // when it ends, not every tick (the counter counts each).
    let mut failing = [false; 3];
    // (priority, model) pairs exported before: set to 0 when they leave the stream, so a
    // drained model does not show its last backlog forever.
    let mut exported: BTreeSet<(Priority, String)> = BTreeSet::new();
    let mut exported_models: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { biased; _ = shutdown.cancelled() => return, _ = tick.tick() => {} }
        let mut lags: BTreeMap<String, u64> = BTreeMap::new();
        let mut now_exported = BTreeSet::new();
        let mut complete = true;
        for p in Priority::ALL {
            let i = p.rank();
            let s = match sample(&js, &mut streams[i], p).await {
                Ok(s) => s,
                Err(e) => {
                    if !std::mem::replace(&mut failing[i], true) {
                        tracing::warn!(priority = p.as_str(), error = %e, "cannot refresh the autoscaling signals; the gauges keep their last values");
                    }
                    counter!(REFRESH_FAILURES, "priority" => p.as_str()).increment(1);
                    // Look the streams up again next time (they may have been recreated).
                    streams[i].iter_mut().for_each(|s| *s = None);
                    complete = false;
                    continue;
                }
            };
            if std::mem::replace(&mut failing[i], false) {
                tracing::info!(priority = p.as_str(), "autoscaling signals refreshed again");
            }
            gauge!(QUEUE_LAG, "priority" => p.as_str()).set(s.lag as f64);
            gauge!(OLDEST_AGE, "priority" => p.as_str()).set(s.oldest_age_s);
            // NaN until two samples give a slope: "not measured yet", not "no arrivals".
            let rate = windows[i].observe(Instant::now(), s.last_seq);
            gauge!(ARRIVAL_RATE, "priority" => p.as_str()).set(rate.unwrap_or(f64::NAN));
            for (model, n) in s.models {
                gauge!(MODEL_LAG, "priority" => p.as_str(), "model" => model.clone()).set(n as f64);
                *lags.entry(model.clone()).or_insert(0) += n;
                now_exported.insert((p, model));
            }
        }
        if !complete {
            // Per-model figures summed over a partial set of priorities would be wrong.
            continue;
        }
        let view = workers.borrow().clone();
        let lag_slopes = slopes.observe(Instant::now(), &lags);
        let signals = model_signals(&lags, &lag_slopes, &view, settings.drain_target);
        // A served model with nothing queued shows 0 at every priority, not nothing, so a
        // query sees "no backlog" rather than "no data".
        for model in signals.keys() {
            for p in Priority::ALL {
                if now_exported.insert((p, model.clone())) {
                    gauge!(MODEL_LAG, "priority" => p.as_str(), "model" => model.clone()).set(0.0);
                }
            }
        }
        for (p, model) in exported.difference(&now_exported) {
            gauge!(MODEL_LAG, "priority" => p.as_str(), "model" => model.clone()).set(0.0);
        }
        exported = now_exported;
        // A model no longer served and no longer queued: nothing to scale for it.
        let gone = exported_models.iter().filter(|m| !signals.contains_key(*m));
        crate::saturation::publish(&signals, gone);
        exported_models = signals.into_keys().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_rate_is_the_slope_over_the_window() {
        let t0 = Instant::now();
        let mut w = ArrivalWindow::default();
        assert_eq!(w.observe(t0, 100), None, "one sample has no slope");
        let r = w.observe(t0 + Duration::from_secs(2), 140).unwrap();
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        // Long after, only the last RATE_WINDOW counts: 50 jobs in 10 s.
        for s in 3..=20 {
            w.observe(t0 + Duration::from_secs(s), 140);
        }
        let r = w.observe(t0 + Duration::from_secs(21), 190).unwrap();
        assert!((r - 5.0).abs() < 1e-9, "{r}");
        // A stream recreated (sequence back to 3): no negative rate, start over.
        assert_eq!(w.observe(t0 + Duration::from_secs(22), 3), None);
    }

    #[test]
    fn model_subjects_are_parsed() {
        assert_eq!(
            model_of("jetinfer.jobs.p1.resnet50", Priority::P1),
            Some("resnet50")
        );
        assert_eq!(model_of("jetinfer.jobs.p1.a.b", Priority::P1), Some("a.b"));
        assert_eq!(
            model_of("jetinfer.jobs.p1.resnet50.3", Priority::P1),
            Some("resnet50")
        );
        assert_eq!(model_of("jetinfer.jobs.p0.resnet50", Priority::P1), None);
        assert_eq!(model_of("jetinfer.jobs.p1.", Priority::P1), None);
        assert_eq!(model_of("other.p1.x", Priority::P1), None);
    }
}

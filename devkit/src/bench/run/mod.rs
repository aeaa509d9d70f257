//! One measured run: publish jobs on a schedule (open loop: fixed or Poisson arrivals per
//! priority; closed loop: N jobs in flight), record each job's completion notice, fetch its
//! result from Redis for batch size and status, and return what the [`Recorder`] saw.
//!
//! Tasks: one publisher per priority (open loop) or one (closed loop), each publish in its
//! own task so acknowledgements overlap; one notice listener (`jetinfer.done.>`); one
//! fetcher that reads results in `MGET` batches; one progress ticker. The in-flight table
//! (job number → priority, intended start) is shared under a mutex: the notice listener
//! removes what the publishers insert.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use jetinfer_schemas::{encode, now_ms, Job, Priority, Status, Tensor};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use super::record::Recorder;
use jetinfer_client::decode_owned;
use jetinfer_client::Client;

/// How arrivals are spaced in an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    Fixed,
    Poisson,
}

/// The offered load.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Jobs per second per priority (P0, P1, P2), independent of completions.
    Open { rates: [f64; 3], arrival: Arrival },
    /// `concurrency` jobs in flight at all times; priority drawn by `mix` weights.
    Closed { concurrency: usize, mix: [u32; 3] },
}

/// What to run.
pub struct RunSpec {
    /// Subject prefix: `jetinfer.jobs` for the pipeline, another for the bare loop.
    pub subject_prefix: String,
    pub model: String,
    /// Samples cycled as job inputs.
    pub pool: Arc<Vec<Vec<Tensor<'static>>>>,
    pub load: Load,
    pub duration: Duration,
    /// Jobs started before this are not in the histograms; completions before it are not
    /// in the throughput.
    pub warmup: Duration,
    /// How long to wait for stragglers after the last publish.
    pub drain: Duration,
    /// Prefix of job ids (unique per run).
    pub id_prefix: String,
    /// Publish acknowledgements awaited at once in an open loop.
    pub max_publishing: usize,
}

/// What a run produced.
pub struct RunResult {
    pub rec: Recorder,
    pub sent: u64,
    /// Jobs with no result at the end of the drain.
    pub missing: u64,
    /// Jobs whose result was found in Redis without a notice reaching us.
    pub without_notice: u64,
    /// Seconds of the measured window.
    pub window_s: f64,
    /// From the first publish to the end of the drain.
    pub elapsed: Duration,
}

struct Flight {
    prio: usize,
    start: Instant,
    published_ms: u64,
}

struct Shared {
    t0: Instant,
    wall_t0_ms: u64,
    warmup: Duration,
    duration: Duration,
    flights: Mutex<HashMap<u64, Flight>>,
    rec: Mutex<Recorder>,
    /// Results to read: (job number, priority, publish wall ms, measured).
    to_fetch: Mutex<Vec<(u64, usize, u64, bool)>>,
    sent: AtomicU64,
    done: AtomicU64,
    /// Closed loop: one permit per job allowed in flight.
    slots: Option<Arc<Semaphore>>,
}

impl Shared {
    fn measured(&self, start: Instant) -> bool {
        let at = start.saturating_duration_since(self.t0);
        at >= self.warmup && at < self.duration
    }
}

/// Runs the load against whatever consumes `spec.subject_prefix` and writes results plus
/// notices the way jetinfer workers do. `producers` holds one client per priority (P0, P1,
/// P2; its own connection each, as separate producer services would have), so a flood at
/// one priority does not queue the others' publishes in the load generator. `notices`
/// should be a connection of its own too, so publishing never delays the notices we time.
pub async fn run(
    producers: &[Client; 3],
    notices: &async_nats::Client,
    spec: RunSpec,
    bar: &ProgressBar,
) -> RunResult {
    let mut sub = notices
        .subscribe("jetinfer.done.>")
        .await
        .expect("subscribing on a connected client fails only when it closes");
    // Make sure the subscription is live on the server before the first publish.
    let _ = notices.flush().await;
    let slots = match &spec.load {
        Load::Closed { concurrency, .. } => Some(Arc::new(Semaphore::new((*concurrency).max(1)))),
        Load::Open { .. } => None,
    };
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        wall_t0_ms: now_ms(),
        warmup: spec.warmup,
        duration: spec.duration,
        flights: Mutex::new(HashMap::new()),
        rec: Mutex::new(Recorder::default()),
        to_fetch: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        done: AtomicU64::new(0),
        slots,
    });
    let id_prefix = format!("{}-", spec.id_prefix);

    // Notice listener.
    let listener = {
        let shared = shared.clone();
        let id_prefix = id_prefix.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                let Some(n) = msg
                    .subject
                    .strip_prefix("jetinfer.done.")
                    .and_then(|id| id.strip_prefix(id_prefix.as_str()))
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                let Some(f) = shared.flights.lock().unwrap().remove(&n) else {
                    continue;
                };
                let measured = shared.measured(f.start);
                let secs = now.duration_since(shared.t0).as_secs_f64();
                let in_window =
                    secs >= shared.warmup.as_secs_f64() && secs < shared.duration.as_secs_f64();
                let us = now.duration_since(f.start).as_micros() as u64;
                shared
                    .rec
                    .lock()
                    .unwrap()
                    .notice(f.prio, secs, in_window, measured.then_some(us));
                shared
                    .to_fetch
                    .lock()
                    .unwrap()
                    .push((n, f.prio, f.published_ms, measured));
                shared.done.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = &shared.slots {
                    s.add_permits(1);
                }
            }
        })
    };

    // Result fetcher: statuses, batch sizes, stored-clock latency.
    let fetch_stop = tokio_util::sync::CancellationToken::new();
    let fetcher = {
        let shared = shared.clone();
        let store = producers[0].store().clone();
        let id_prefix = id_prefix.clone();
        let stop = fetch_stop.clone();
        tokio::spawn(async move {
            loop {
                let batch: Vec<_> = std::mem::take(&mut *shared.to_fetch.lock().unwrap());
                if batch.is_empty() {
                    if stop.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                for chunk in batch.chunks(256) {
                    let ids: Vec<String> = chunk
                        .iter()
                        .map(|(n, ..)| format!("{id_prefix}{n}"))
                        .collect();
                    let raw = match store.get_many_raw(&ids).await {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                    let mut rec = shared.rec.lock().unwrap();
                    for ((_, prio, published_ms, measured), (id, bytes)) in
                        chunk.iter().zip(ids.iter().zip(raw))
                    {
                        let Some(bytes) = bytes else {
                            *rec.errors
                                .entry("notice_without_result".into())
                                .or_default() += 1;
                            continue;
                        };
                        account(&mut rec, id, &bytes, *prio, *published_ms, *measured);
                    }
                }
            }
        })
    };

    // Progress ticker.
    let ticker = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = shared.t0.elapsed().as_secs_f64();
                let (sent, done) = (
                    shared.sent.load(Ordering::Relaxed),
                    shared.done.load(Ordering::Relaxed),
                );
                bar.set_position((secs * 10.0) as u64);
                bar.set_message(format!(
                    "sent {sent}, done {done}, in flight {}",
                    sent.saturating_sub(done)
                ));
            }
        })
    };

    // Publishers.
    let counter = Arc::new(AtomicU64::new(0));
    let ctx = Arc::new(PublishCtx {
        producers: producers.clone(),
        shared: shared.clone(),
        prefix: spec.subject_prefix.clone(),
        model: spec.model.clone(),
        pool: spec.pool.clone(),
        id_prefix: id_prefix.clone(),
        counter,
    });
    let end = shared.t0 + spec.duration;
    let mut publishers = Vec::new();
    match spec.load.clone() {
        Load::Open { rates, arrival } => {
            for (prio, rate) in rates.into_iter().enumerate() {
                if rate <= 0.0 {
                    continue;
                }
                // Each priority's producer awaits its own publish acknowledgements.
                let publishing = Arc::new(Semaphore::new(spec.max_publishing.max(1)));
                let ctx = ctx.clone();
                publishers.push(tokio::spawn(async move {
                    let mut next = ctx.shared.t0;
                    let mut rng = rand::rngs::SmallRng::from_os_rng();
                    let mut tasks = tokio::task::JoinSet::new();
                    loop {
                        let gap = match arrival {
                            Arrival::Fixed => 1.0 / rate,
                            Arrival::Poisson => -(1.0 - rng.random::<f64>()).ln() / rate,
                        };
                        next += Duration::from_secs_f64(gap);
                        if next >= end {
                            break;
                        }
                        tokio::time::sleep_until(next.into()).await;
                        let permit = publishing
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("never closed");
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            ctx.publish(prio, next).await;
                            drop(permit);
                        });
                        while tasks.try_join_next().is_some() {}
                    }
                    while tasks.join_next().await.is_some() {}
                }));
            }
        }
        Load::Closed { mix, .. } => {
            let ctx = ctx.clone();
            publishers.push(tokio::spawn(async move {
                let slots = ctx
                    .shared
                    .slots
                    .clone()
                    .expect("closed loop has slots: this is a bug");
                let total: u32 = mix.iter().sum::<u32>().max(1);
                let mut rng = rand::rngs::SmallRng::from_os_rng();
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    let permit = tokio::select! {
                        p = slots.acquire() => p.expect("never closed"),
                        _ = tokio::time::sleep_until(end.into()) => break,
                    };
                    permit.forget();
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let mut pick = rng.random_range(0..total);
                    let prio = mix.iter().position(|&w| {
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    });
                    let ctx = ctx.clone();
                    tasks.spawn(async move { ctx.publish(prio.unwrap_or(1), now).await });
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            }));
        }
    }
    for p in publishers {
        let _ = p.await;
    }

    // Drain: wait for stragglers, then look the rest up in Redis once.
    let drain_end = Instant::now() + spec.drain;
    while !shared.flights.lock().unwrap().is_empty() && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let notices already on the wire arrive before we look the rest up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let elapsed = shared.t0.elapsed();
    listener.abort();
    ticker.abort();
    fetch_stop.cancel();
    let _ = fetcher.await;
    let left: Vec<(u64, Flight)> = shared.flights.lock().unwrap().drain().collect();
    let mut missing = 0;
    let mut without_notice = 0;
    for chunk in left.chunks(256) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|(n, _)| format!("{id_prefix}{n}"))
            .collect();
        let raw = producers[0]
            .store()
            .get_many_raw(&ids)
            .await
            .unwrap_or_else(|_| vec![None; ids.len()]);
        let mut rec = shared.rec.lock().unwrap();
        for ((_, f), (id, bytes)) in chunk.iter().zip(ids.iter().zip(raw)) {
            match bytes {
                Some(b) => {
                    without_notice += 1;
                    account(
                        &mut rec,
                        id,
                        &b,
                        f.prio,
                        f.published_ms,
                        shared.measured(f.start),
                    );
                }
                None => missing += 1,
            }
        }
    }
    let rec = std::mem::take(&mut *shared.rec.lock().unwrap());
    RunResult {
        rec,
        sent: shared.sent.load(Ordering::Relaxed),
        missing,
        without_notice,
        window_s: spec.duration.saturating_sub(spec.warmup).as_secs_f64(),
        elapsed,
    }
}

/// Adds one stored result to the recorder.
fn account(
    rec: &mut Recorder,
    id: &str,
    bytes: &[u8],
    prio: usize,
    published_ms: u64,
    measured: bool,
) {
    match decode_owned(id, bytes) {
        Ok(r) => {
            if r.status == Status::Ok {
                rec.ok += 1;
            } else {
                let code = r
                    .error
                    .as_ref()
                    .map(|e| e.code.as_str().to_string())
                    .unwrap_or_else(|| r.status.as_str().to_string());
                *rec.errors.entry(code).or_default() += 1;
            }
            if measured {
                if r.timings.batch_size > 0 {
                    rec.batch_size_sum += r.timings.batch_size as u64;
                    rec.batch_size_n += 1;
                    rec.compute_ms_sum += r.timings.compute_ms;
                    rec.queued_ms_sum += r.timings.queued_ms;
                }
                if r.completed_at_ms > 0 {
                    rec.stored(prio, r.completed_at_ms.saturating_sub(published_ms));
                }
            }
        }
        Err(_) => *rec.errors.entry("undecodable_result".into()).or_default() += 1,
    }
}

struct PublishCtx {
    /// One per priority.
    producers: [Client; 3],
    shared: Arc<Shared>,
    prefix: String,
    model: String,
    pool: Arc<Vec<Vec<Tensor<'static>>>>,
    id_prefix: String,
    counter: Arc<AtomicU64>,
}

impl PublishCtx {
    /// Publishes one job whose intended start is `start`; failures are counted and, in a
    /// closed loop, give their slot back.
    async fn publish(&self, prio: usize, start: Instant) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", self.id_prefix);
        let sample = &self.pool[(n as usize) % self.pool.len()];
        let mut job = Job::new(
            id.as_str(),
            self.model.as_str(),
            sample.iter().map(Tensor::borrowed).collect(),
        );
        // Every job must run: the cache would answer repeated samples.
        job.cache = Some(false);
        let payload = encode(&job);
        let published_ms = self.shared.wall_t0_ms
            + start.saturating_duration_since(self.shared.t0).as_millis() as u64;
        // Insert before publishing: the notice can beat the publish acknowledgement.
        self.shared.flights.lock().unwrap().insert(
            n,
            Flight {
                prio,
                start,
                published_ms,
            },
        );
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        let subject = format!(
            "{}.{}.{}",
            self.prefix,
            Priority::ALL[prio].as_str(),
            self.model
        );
        if self.producers[prio]
            .publish_raw(&subject, &id, payload.into())
            .await
            .is_err()
        {
            self.shared.flights.lock().unwrap().remove(&n);
            self.shared.rec.lock().unwrap().publish_errors += 1;
            self.shared.done.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = &self.shared.slots {
                s.add_permits(1);
            }
        }
    }
}

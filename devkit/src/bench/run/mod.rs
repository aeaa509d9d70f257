//! One measured run: publish jobs on a schedule (open loop: fixed or Poisson arrivals per
//! priority; closed loop: N jobs in flight), record each job's completion notice, fetch its
//! result from Redis for batch size and status, and return what the [`Recorder`] saw.
//!
//! Tasks: one publisher per priority (open loop) or one (closed loop), each publish in its
//! own task so acknowledgements overlap ([`publish`]); one notice listener, one result
//! fetcher and one progress ticker ([`observe`]). They share one [`shared::Shared`] state.

mod observe;
mod publish;
mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use jetinfer_client::Client;
use jetinfer_schemas::{now_ms, Tensor};
use tokio::sync::Semaphore;

use super::record::Recorder;
use observe::FETCH_CHUNK;
use publish::PublishCtx;
use shared::{account, Flight, Shared};

pub use super::load::{Arrival, Load};

/// What to run.
pub struct RunSpec {
    /// Subject prefix: `jetinfer.jobs` for the pipeline, another for the bare loop.
    pub subject_prefix: String,
    /// The bare loop's partition streams (the pipeline's producers read theirs from
    /// JetStream).
    pub partitions: u16,
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
    let sub = notices
        .subscribe("jetinfer.done.>")
        .await
        .expect("subscribing on a connected client fails only when it closes");
    // Make sure the subscription is live on the server before the first publish.
    let _ = notices.flush().await;
    let slots = match &spec.load {
        Load::Closed { concurrency, .. } => Some(Arc::new(Semaphore::new((*concurrency).max(1)))),
        Load::Open { .. } => None,
    };
    let shared = Arc::new(Shared::new(
        Instant::now(),
        now_ms(),
        spec.warmup,
        spec.duration,
        slots,
    ));
    let id_prefix = format!("{}-", spec.id_prefix);
    let listener = observe::listener(shared.clone(), sub, id_prefix.clone());
    let fetch_stop = tokio_util::sync::CancellationToken::new();
    let fetcher = observe::fetcher(
        shared.clone(),
        producers[0].store().clone(),
        id_prefix.clone(),
        fetch_stop.clone(),
    );
    let ticker = observe::ticker(shared.clone(), bar.clone());
    publish_all(producers, &shared, &spec, &id_prefix).await;

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
    let (missing, without_notice) = look_up_the_rest(&producers[0], &shared, &id_prefix).await;
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

/// Starts the publishers `spec.load` asks for and waits until they are done.
async fn publish_all(
    producers: &[Client; 3],
    shared: &Arc<Shared>,
    spec: &RunSpec,
    id_prefix: &str,
) {
    let ctx = Arc::new(PublishCtx {
        producers: producers.clone(),
        shared: shared.clone(),
        prefix: spec.subject_prefix.clone(),
        bare_partitions: spec.partitions,
        model: spec.model.clone(),
        pool: spec.pool.clone(),
        id_prefix: id_prefix.to_string(),
        counter: AtomicU64::new(0),
    });
    let end = shared.t0 + spec.duration;
    let publishers = match spec.load.clone() {
        Load::Open { rates, arrival } => rates
            .into_iter()
            .enumerate()
            .filter(|&(_, rate)| rate > 0.0)
            .map(|(prio, rate)| {
                publish::open_loop(ctx.clone(), prio, rate, arrival, end, spec.max_publishing)
            })
            .collect(),
        Load::Closed { mix, .. } => vec![publish::closed_loop(ctx, mix, end)],
    };
    for p in publishers {
        let _ = p.await;
    }
}

/// Looks up in Redis the jobs whose notice never came: returns (missing, found without a
/// notice), and accounts the found ones.
async fn look_up_the_rest(client: &Client, shared: &Shared, id_prefix: &str) -> (u64, u64) {
    let left: Vec<(u64, Flight)> = shared.flights.lock().unwrap().drain().collect();
    let mut missing = 0;
    let mut without_notice = 0;
    for chunk in left.chunks(FETCH_CHUNK) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|(n, _)| format!("{id_prefix}{n}"))
            .collect();
        let raw = client
            .store()
            .get_many_raw(&ids)
            .await
            .unwrap_or_else(|_| vec![None; ids.len()]);
        let mut rec = shared.rec.lock().unwrap();
        for ((_, f), (id, bytes)) in chunk.iter().zip(ids.iter().zip(raw)) {
            match bytes {
                Some(b) => {
                    without_notice += 1;
                    let measured = shared.measured(f.start);
                    account(&mut rec, id, &b, f.prio, f.published_ms, measured);
                }
                None => missing += 1,
            }
        }
    }
    (missing, without_notice)
}

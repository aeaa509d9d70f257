//! The tasks that watch a run: the notice listener (`jetinfer.done.>`), the result
//! fetcher that reads results in `MGET` batches, and the progress ticker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use jetinfer_client::ResultStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shared::{account, Shared};

/// Results per `MGET`.
pub(super) const FETCH_CHUNK: usize = 256;

/// Records each completion notice of a job of this run (ids `<id_prefix><n>`) and queues
/// its result to be read.
pub(super) fn listener(
    shared: Arc<Shared>,
    mut sub: async_nats::Subscriber,
    id_prefix: String,
) -> JoinHandle<()> {
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
            shared.finished();
        }
    })
}

/// Reads the queued results (statuses, batch sizes, stored-clock latency) until `stop`
/// and the queue is empty.
pub(super) fn fetcher(
    shared: Arc<Shared>,
    store: ResultStore,
    id_prefix: String,
    stop: CancellationToken,
) -> JoinHandle<()> {
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
            for chunk in batch.chunks(FETCH_CHUNK) {
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
}

/// Moves the progress bar with the elapsed time and shows sent / done / in flight.
pub(super) fn ticker(shared: Arc<Shared>, bar: ProgressBar) -> JoinHandle<()> {
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
}

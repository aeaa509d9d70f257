//! The bare loop: the least a queue-fed worker must do, written with the same clients as
//! jetinfer (async-nats, the Redis [`ResultStore`]) — JetStream publish → pull → ack →
//! Redis `SET` — so `jetinfer bench --bare-loop` can say how much the pipeline adds.
//!
//! It uses its own WorkQueue streams (`JETINFER_BARE`, subjects `jetinfer.bare.<p>.<model>`,
//! and with `--partitions N` also `JETINFER_BARE_<k>` on `jetinfer.bare.<p>.<model>.<k>`,
//! spread by job id as the pipeline's partitions are) with the same storage as the
//! pipeline's, one durable pull consumer per stream, pulls in batches, stores one
//! minimal result per message in one pipeline per batch (`SET NX PX`, as the worker does),
//! acks, and publishes the completion notice the benchmark times — the same notice the
//! worker publishes, so both are measured the same way. It decodes nothing but the id
//! header: no model, no dispatcher, no batching policy.
//!
//! With [`Hops::Two`] (`--bare-relay`) each pulled group instead crosses to a second
//! consumer ([`relay`]) as one core-NATS request, which stores the results, announces them
//! and replies, and only then are the messages acked: the least a design with a dispatcher
//! in front of its workers does per job.
//!
//! It runs on threads of its own (`bare-loop`) with its own NATS and Redis connections, so
//! those threads' CPU time is the loop's whole cost — the report's service CPU for the bare
//! loop, the least a consumer written with these clients spends per job — and the load
//! generator's is not in it. One stream gets a current-thread runtime (the cheapest per
//! job: no hand-over between threads); N partition streams get N worker threads, so the
//! loop can carry what N streams deliver.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use jetinfer_schemas::names::done_subject;
use jetinfer_schemas::partitions::MAX_PARTITIONS;
use jetinfer_schemas::{encode, now_ms, JobResult, Timings};
use tokio_util::sync::CancellationToken;

use jetinfer_client::{ResultStore, ResultWrite, StoreConfig};

use super::BenchError;

mod relay;

/// How many consumers a bare job passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hops {
    /// Pull, store, ack: the bare loop.
    One,
    /// Pull, one request per pulled group to a second consumer that stores and replies,
    /// ack: the bare relay.
    Two,
}

/// The bare loop's stream (partition 0; partition k is `JETINFER_BARE_<k>`).
pub const BARE_STREAM: &str = "JETINFER_BARE";
/// Its subject prefix (`jetinfer.bare.<p>.<model>`).
pub const BARE_PREFIX: &str = "jetinfer.bare";

/// Messages per pull, as the dispatcher's default `--pull-batch`.
const PULL_BATCH: usize = 32;

/// The subject of a bare job of `model` at priority token `p`, in partition `k`.
pub fn bare_subject(p: &str, model: &str, k: u16) -> String {
    match k {
        0 => format!("{BARE_PREFIX}.{p}.{model}"),
        k => format!("{BARE_PREFIX}.{p}.{model}.{k}"),
    }
}

/// Creates (or recreates, empty) the bare streams, `partitions` of them, and starts a
/// consumer loop on each, on the `bare-loop` threads; they run until `stop`. Returns those
/// threads' ids, whose CPU time is the loop's (see [`super::cpu::thread_cpu_seconds`]).
pub async fn start(
    nats_url: String,
    store: StoreConfig,
    storage: stream::StorageType,
    partitions: u16,
    hops: Hops,
    stop: CancellationToken,
) -> Result<Vec<u32>, BenchError> {
    let (ready, started) = tokio::sync::oneshot::channel();
    let tids = Tids::default();
    let thread_tids = tids.clone();
    let thread = std::thread::Builder::new()
        .name("bare-loop".into())
        .spawn(move || {
            let runtime = match runtime(partitions, &thread_tids) {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(BenchError::BareLoop(format!("its runtime: {e}"))));
                    return;
                }
            };
            runtime.block_on(async move {
                match serve_partitions(&nats_url, &store, storage, partitions, hops, &stop).await {
                    Ok(()) => {
                        let _ = ready.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                stop.cancelled().await;
            });
        });
    if let Err(e) = thread {
        return Err(BenchError::BareLoop(format!("its thread: {e}")));
    }
    started
        .await
        .unwrap_or_else(|_| Err(BenchError::BareLoop("its thread ended early".into())))?;
    let tids = tids.lock().expect("not poisoned").clone();
    Ok(tids)
}

/// The ids of the loop's threads, filled as they start.
type Tids = std::sync::Arc<std::sync::Mutex<Vec<u32>>>;

/// The loop's runtime, run by the calling thread: current-thread for one stream, one worker
/// thread per stream for more; every thread that runs it goes into `tids`.
fn runtime(partitions: u16, tids: &Tids) -> std::io::Result<tokio::runtime::Runtime> {
    tids.lock().expect("not poisoned").push(gettid());
    let mut builder = match partitions {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.into());
            b
        }
    };
    let workers = tids.clone();
    builder
        .thread_name("bare-loop")
        .on_thread_start(move || workers.lock().expect("not poisoned").push(gettid()))
        .enable_all()
        .build()
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Connects, makes the streams and spawns one consumer loop per partition on the loop's
/// runtime.
async fn serve_partitions(
    nats_url: &str,
    store: &StoreConfig,
    storage: stream::StorageType,
    partitions: u16,
    hops: Hops,
    stop: &CancellationToken,
) -> Result<(), BenchError> {
    let nats = async_nats::connect(nats_url)
        .await
        .map_err(|e| BenchError::Nats {
            what: "bare loop connection",
            source: e.into(),
        })?;
    let store = ResultStore::new(store).map_err(|e| BenchError::BareLoop(e.to_string()))?;
    if hops == Hops::Two {
        relay::serve(nats_url, store.clone(), stop.clone()).await?;
    }
    let js = jetstream::new(nats.clone());
    for k in 0..MAX_PARTITIONS {
        let _ = js.delete_stream(stream_name(k)).await;
    }
    for k in 0..partitions.clamp(1, MAX_PARTITIONS) {
        let messages = start_partition(&js, storage, k).await?;
        tokio::spawn(serve(
            nats.clone(),
            store.clone(),
            messages,
            hops,
            stop.clone(),
        ));
    }
    Ok(())
}

fn stream_name(k: u16) -> String {
    match k {
        0 => BARE_STREAM.to_string(),
        k => format!("{BARE_STREAM}_{k}"),
    }
}

/// Partition `k`'s stream and the pull of its consumer.
async fn start_partition(
    js: &jetstream::Context,
    storage: stream::StorageType,
    k: u16,
) -> Result<consumer::pull::Stream, BenchError> {
    let nats_err = |e: async_nats::Error| BenchError::Nats {
        what: "bare loop",
        source: e,
    };
    let subject = match k {
        0 => format!("{BARE_PREFIX}.*.*"),
        k => format!("{BARE_PREFIX}.*.*.{k}"),
    };
    let stream = js
        .create_stream(stream::Config {
            name: stream_name(k),
            subjects: vec![subject],
            retention: stream::RetentionPolicy::WorkQueue,
            storage,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err(e.into()))?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bare".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err(e.into()))?;
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .map_err(|e| nats_err(e.into()))
}

async fn serve(
    nats: async_nats::Client,
    store: ResultStore,
    messages: consumer::pull::Stream,
    hops: Hops,
    stop: CancellationToken,
) {
    // Take whatever has arrived, up to one pull batch, and handle it as one group.
    let mut batches = messages.ready_chunks(PULL_BATCH);
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            b = batches.next() => b,
        };
        let Some(batch) = batch else { break };
        let msgs: Vec<_> = batch.into_iter().filter_map(Result::ok).collect();
        let ids: Vec<String> = msgs
            .iter()
            .map(|m| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect();
        match hops {
            Hops::One => {
                if store_results(&store, &ids).await.is_err() {
                    // Leave them unacked: JetStream redelivers after AckWait.
                    continue;
                }
                for (m, id) in msgs.iter().zip(&ids) {
                    let _ = m.ack().await;
                    let _ = nats.publish(done_subject(id), "ok".into()).await;
                }
            }
            // Many groups in flight, as the dispatcher has many bundles.
            Hops::Two => {
                tokio::spawn(relay::forward(nats.clone(), msgs, ids));
            }
        }
    }
}

/// One minimal result per id in one pipeline (`SET NX PX`, as the worker does).
async fn store_results(store: &ResultStore, ids: &[impl AsRef<str>]) -> Result<(), ()> {
    let completed = now_ms();
    let writes: Vec<ResultWrite> = ids
        .iter()
        .map(|id| {
            let mut r = JobResult::ok(id.as_ref(), "bare", "0", Vec::new());
            r.timings = Timings {
                batch_size: ids.len() as u32,
                ..Timings::default()
            };
            r.completed_at_ms = completed;
            ResultWrite {
                id: id.as_ref(),
                bytes: encode(&r),
                drop_inputs: false,
            }
        })
        .collect();
    store
        .put_results(&writes, &[])
        .await
        .map(|_| ())
        .map_err(|_| ())
}

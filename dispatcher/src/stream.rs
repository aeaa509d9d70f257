//! The JetStream side: each priority's jobs streams (one per partition) and their durable
//! pull consumers.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, GetStreamError};
use async_nats::jetstream::stream::{ConsumerError, ConsumerUpdateError};
use async_nats::jetstream::{self, consumer, stream};
use jetinfer_connect::streams::{priority_consumer, JobsStream};
use jetinfer_schemas::names::LEGACY_JOBS_STREAM;
use jetinfer_schemas::partitions::{partition_consumer, partition_stream, MAX_PARTITIONS};
use jetinfer_schemas::Priority;

use crate::config::{Config, Storage};

/// Why a stream or consumer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot create or update stream {stream}")]
    Create {
        stream: String,
        #[source]
        source: CreateStreamError,
    },
    #[error("cannot look up stream {stream}")]
    Get {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    /// The one-stream layout of older versions still holds jobs; its subjects overlap the
    /// per-priority streams, so they cannot be created beside it.
    #[error("stream {LEGACY_JOBS_STREAM} (the one-stream layout of older versions) still holds {messages} jobs: let an older dispatcher drain it, or delete it (`nats stream rm {LEGACY_JOBS_STREAM}`), then start again")]
    LegacyNotEmpty { messages: u64 },
    #[error("cannot remove the empty stream {LEGACY_JOBS_STREAM}")]
    LegacyRemove(#[source] async_nats::jetstream::context::DeleteStreamError),
    /// `--partitions` was lowered while a partition beyond it still holds jobs: nobody
    /// would pull them.
    #[error("stream {stream} (a partition beyond --partitions {partitions}) still holds {messages} jobs: start with --partitions {needed} until it drains")]
    PartitionNotEmpty {
        stream: String,
        partitions: u16,
        needed: u16,
        messages: u64,
    },
    #[error("cannot read the state of stream {stream}")]
    Info {
        stream: String,
        #[source]
        source: async_nats::jetstream::stream::InfoError,
    },
    #[error("cannot remove the empty stream {stream} (a partition beyond --partitions)")]
    PartitionRemove {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::DeleteStreamError,
    },
    /// Creating failed (`create`), and so did updating the existing consumer (`source`).
    #[error("cannot create or update consumer {consumer} (create: {create})")]
    Consumer {
        consumer: String,
        create: ConsumerError,
        #[source]
        source: ConsumerUpdateError,
    },
}

/// The jobs streams' definition from the dispatcher's flags.
fn jobs_stream_config(cfg: &Config) -> JobsStream {
    JobsStream {
        max_messages: cfg.stream_max_msgs,
        max_messages_per_subject: cfg.stream_max_msgs_per_subject,
        max_bytes: cfg.stream_max_bytes,
        duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
        storage: match cfg.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        replicas: cfg.replicas,
    }
}

/// How long JetStream API requests made through the intake's stream and consumer handles
/// wait for an answer. async-nats's default is the connection's 10 s request timeout, and
/// after a reconnect the pull stream asks for the consumer's info before it pulls again: on
/// a cluster, when the node the dispatcher was connected to also led the consumer, that
/// request goes unanswered until a new consumer leader is elected, and delivery stayed
/// stopped for the whole 10 s. With 2 s it is asked again (async-nats retries it with a
/// short back-off) soon after the election. Creating or updating the consumer at start
/// takes milliseconds, well within it.
const INTAKE_API_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates partition `k` of priority `p`'s jobs streams, or updates its limits to the
/// dispatcher's flags. The handle returned (and the consumers made from it) uses
/// [`INTAKE_API_TIMEOUT`].
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &Config,
    p: Priority,
    k: u16,
) -> Result<stream::Stream, StreamError> {
    let name = partition_stream(p, k);
    js.create_or_update_stream(jobs_stream_config(cfg).config(p, k, cfg.partitions))
        .await
        .map_err(|source| StreamError::Create {
            stream: name.clone(),
            source,
        })?;
    let mut intake_js = js.clone();
    intake_js.set_timeout(INTAKE_API_TIMEOUT);
    intake_js
        .get_stream(&name)
        .await
        .map_err(|source| StreamError::Get {
            stream: name.clone(),
            source,
        })
}

/// The streams of `p`'s partitions beyond `--partitions` that exist (a dispatcher that
/// ran with more left them), refused with [`StreamError::PartitionNotEmpty`] if one still
/// holds jobs: no consumer of this dispatcher would pull them. Checked before anything is
/// changed, so a refused start leaves the layout as it was.
pub async fn extra_partitions(
    js: &jetstream::Context,
    cfg: &Config,
    p: Priority,
) -> Result<Vec<(u16, stream::Stream)>, StreamError> {
    let mut extra = Vec::new();
    for k in cfg.partitions..MAX_PARTITIONS {
        let Ok(mut stream) = js.get_stream(partition_stream(p, k)).await else {
            continue;
        };
        check_empty(&mut stream, cfg, k).await?;
        extra.push((k, stream));
    }
    Ok(extra)
}

/// Removes extra partition `k` once partition 0 announces the lower count: first its
/// subjects are taken away (a producer that still publishes there gets "no stream" and
/// reads the count again, see `jetinfer_client`), then it is deleted if still empty — a job
/// published between the first check and the subject change is never deleted with it.
pub async fn retire_partition(
    js: &jetstream::Context,
    cfg: &Config,
    (k, mut stream): (u16, stream::Stream),
) -> Result<(), StreamError> {
    let mut config = stream.cached_info().config.clone();
    let name = config.name.clone();
    config.subjects = vec![format!("jetinfer.retired.{}", name.to_ascii_lowercase())];
    js.update_stream(config)
        .await
        .map_err(|source| StreamError::Create {
            stream: name.clone(),
            source,
        })?;
    check_empty(&mut stream, cfg, k).await?;
    js.delete_stream(&name)
        .await
        .map_err(|source| StreamError::PartitionRemove {
            stream: name.clone(),
            source,
        })?;
    tracing::info!(stream = %name, partitions = cfg.partitions, "removed an empty partition beyond --partitions");
    Ok(())
}

/// Refuses partition `k`'s stream unless it holds no job; a state that cannot be read is
/// not taken for empty (the stream is deleted on this answer).
async fn check_empty(stream: &mut stream::Stream, cfg: &Config, k: u16) -> Result<(), StreamError> {
    let name = stream.cached_info().config.name.clone();
    let messages = match stream.info().await {
        Ok(info) => info.state.messages,
        Err(source) => {
            return Err(StreamError::Info {
                stream: name,
                source,
            })
        }
    };
    if messages == 0 {
        return Ok(());
    }
    Err(StreamError::PartitionNotEmpty {
        stream: name,
        partitions: cfg.partitions,
        needed: k + 1,
        messages,
    })
}

/// Removes the one-stream layout of older versions when it is empty (its subjects would
/// overlap the per-priority streams); refuses to start while it still holds jobs.
pub async fn retire_legacy_stream(js: &jetstream::Context) -> Result<(), StreamError> {
    let Ok(mut legacy) = js.get_stream(LEGACY_JOBS_STREAM).await else {
        return Ok(());
    };
    let messages = legacy.info().await.map(|i| i.state.messages).unwrap_or(0);
    if messages > 0 {
        return Err(StreamError::LegacyNotEmpty { messages });
    }
    js.delete_stream(LEGACY_JOBS_STREAM)
        .await
        .map_err(StreamError::LegacyRemove)?;
    tracing::info!(
        stream = LEGACY_JOBS_STREAM,
        "removed the empty one-stream layout of an older version"
    );
    Ok(())
}

/// Creates or updates the dead-letter stream (`jetinfer dlq` reads and replays it).
pub async fn ensure_dlq_stream(js: &jetstream::Context, cfg: &Config) -> Result<(), StreamError> {
    let config = jobs_stream_config(cfg).dlq_config();
    let stream = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|source| StreamError::Create { stream, source })?;
    Ok(())
}

/// Creates the durable pull consumer of partition `k` of one priority, or updates it to
/// our settings.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    cfg: &Config,
    p: Priority,
    k: u16,
) -> Result<consumer::PullConsumer, StreamError> {
    // Held jobs (the priority's cap, which one partition may hold all of) plus every
    // intake task's prefetch buffer.
    let prefetch = cfg.pull_batch * 2 * cfg.intake_tasks as usize;
    let max_ack_pending = (cfg.in_flight_cap(p) + prefetch) as i64;
    let config = priority_consumer(p, k, cfg.ack_wait(), max_ack_pending);
    match stream.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        Err(e) => {
            // An older dispatcher created it with other settings: update to ours.
            let consumer = partition_consumer(p, k);
            tracing::info!(%consumer, error = %e, "updating existing consumer");
            stream
                .update_consumer(config)
                .await
                .map_err(|source| StreamError::Consumer {
                    consumer,
                    create: e,
                    source,
                })
        }
    }
}

//! The JetStream side: the job stream and one durable pull consumer per priority.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use jetinfer_schemas::names::{priority_filter, DLQ_STREAM, JOBS_PREFIX, JOBS_STREAM};
use jetinfer_schemas::Priority;

use crate::config::{Config, Storage};

/// Durable consumer name of a priority (shared by every dispatcher: they split the work).
pub fn consumer_name(p: Priority) -> String {
    format!("jetinfer-dispatch-{}", p.as_str())
}

/// Creates the stream, or updates its limits: WorkQueue retention (a job leaves the stream
/// when acked), DiscardNew so producers get an error when it is full — in all, and per
/// subject, so one priority's burst cannot lock the others out — and a duplicate window for
/// `Nats-Msg-Id` de-duplication.
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &Config,
) -> Result<stream::Stream, anyhow::Error> {
    let config = stream::Config {
        name: JOBS_STREAM.to_string(),
        subjects: vec![format!("{JOBS_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_messages: cfg.stream_max_msgs,
        max_messages_per_subject: if cfg.stream_max_msgs_per_subject > 0 {
            cfg.stream_max_msgs_per_subject
        } else {
            -1
        },
        discard_new_per_subject: cfg.stream_max_msgs_per_subject > 0,
        max_bytes: cfg.stream_max_bytes,
        duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
        storage: match cfg.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    js.create_or_update_stream(config).await?;
    Ok(js.get_stream(JOBS_STREAM).await?)
}

/// The dead-letter stream: poison jobs with their reason, kept a week for inspection and
/// replay (`jetinfer dlq`). Limits retention: reading a dead letter does not remove it.
pub async fn ensure_dlq_stream(js: &jetstream::Context, cfg: &Config) -> Result<(), anyhow::Error> {
    js.create_or_update_stream(stream::Config {
        name: DLQ_STREAM.to_string(),
        subjects: vec!["jetinfer.dlq.>".to_string()],
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
        storage: match cfg.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: cfg.replicas,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// The durable pull consumer of one priority. `max_deliver` is unlimited: the dispatcher
/// counts attempts itself and dead-letters (`poison`), because a WorkQueue stream would
/// keep a message that hit MaxDeliver forever without telling anyone.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    cfg: &Config,
    p: Priority,
) -> Result<consumer::PullConsumer, anyhow::Error> {
    let name = consumer_name(p);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: priority_filter(p),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait(),
        max_deliver: -1,
        // Held jobs plus the prefetch buffer; a lower value silently stops delivery.
        max_ack_pending: (cfg.in_flight_cap(p) + cfg.pull_batch * 2) as i64,
        ..Default::default()
    };
    match stream.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        Err(e) => {
            // An older dispatcher created it with other settings: update to ours.
            tracing::info!(consumer = %name, error = %e, "updating existing consumer");
            stream.update_consumer(config).await.map_err(Into::into)
        }
    }
}

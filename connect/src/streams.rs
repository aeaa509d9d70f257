//! The JetStream objects every process agrees on: the jobs streams of each priority (one per
//! partition, `jetinfer_schemas::partitions`), the dead-letter stream and the durable pull
//! consumer of each jobs stream. The dispatcher creates them from these definitions; tools
//! that run without a dispatcher (the bench baselines) create the same.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use jetinfer_schemas::names::{DLQ_STREAM, JOBS_PREFIX, LEGACY_JOBS_STREAM};
use jetinfer_schemas::partitions::{
    partition_consumer, partition_filter, partition_stream, partitions_from_metadata,
    PARTITIONS_METADATA_KEY,
};
use jetinfer_schemas::Priority;

/// The limits and placement of each priority's jobs stream (the dispatcher's flags); every
/// priority's stream gets the same limits, each counted on its own.
#[derive(Debug, Clone)]
pub struct JobsStream {
    /// Messages in all; -1 for no limit.
    pub max_messages: i64,
    /// Messages per subject (priority + model); 0 or less for no limit.
    pub max_messages_per_subject: i64,
    /// Bytes in all; -1 for no limit.
    pub max_bytes: i64,
    /// How long a `Nats-Msg-Id` is remembered for de-duplication.
    pub duplicate_window: Duration,
    pub storage: stream::StorageType,
    pub replicas: usize,
}

impl Default for JobsStream {
    fn default() -> Self {
        JobsStream {
            max_messages: -1,
            max_messages_per_subject: 0,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(600),
            storage: stream::StorageType::File,
            replicas: 1,
        }
    }
}

impl JobsStream {
    /// The stream of partition `k` of priority `p`'s jobs, when the priority has
    /// `partitions` of them: WorkQueue retention (a job leaves the stream when acked),
    /// DiscardNew so producers get an error when it is full — in all, and per subject
    /// (model), so one model's burst cannot lock the others out — and a duplicate window for
    /// `Nats-Msg-Id` de-duplication. Every partition has these limits, each on its own.
    /// Partition 0 carries the partition count in its metadata, where producers read it.
    pub fn config(&self, p: Priority, k: u16, partitions: u16) -> stream::Config {
        let mut config = stream::Config {
            name: partition_stream(p, k),
            subjects: vec![partition_filter(p, k)],
            ..self.shared_config()
        };
        if k == 0 {
            config
                .metadata
                .insert(PARTITIONS_METADATA_KEY.to_string(), partitions.to_string());
        }
        config
    }

    /// One stream for every priority, as before each priority had its own: the layout the
    /// bench's Python baseline consumes.
    pub fn legacy_config(&self) -> stream::Config {
        stream::Config {
            name: LEGACY_JOBS_STREAM.to_string(),
            subjects: vec![format!("{JOBS_PREFIX}.>")],
            ..self.shared_config()
        }
    }

    fn shared_config(&self) -> stream::Config {
        let per_subject = self.max_messages_per_subject > 0;
        stream::Config {
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_messages: self.max_messages,
            max_messages_per_subject: if per_subject {
                self.max_messages_per_subject
            } else {
                -1
            },
            discard_new_per_subject: per_subject,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            storage: self.storage,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The dead-letter stream beside it: poison jobs with their reason, kept a week for
    /// inspection and replay. Limits retention: reading a dead letter does not remove it.
    pub fn dlq_config(&self) -> stream::Config {
        stream::Config {
            name: DLQ_STREAM.to_string(),
            subjects: vec!["jetinfer.dlq.>".to_string()],
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: self.duplicate_window,
            storage: self.storage,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// How many partition streams priority `p` has, as the dispatcher wrote it in the metadata
/// of the priority's partition-0 stream. A stream that cannot be read (not created yet, no
/// permission to read it) counts as one partition: partition 0 is always right to publish
/// to and to look in, only not spread.
pub async fn partition_count(js: &async_nats::jetstream::Context, p: Priority) -> u16 {
    let name = partition_stream(p, 0);
    match js.get_stream(&name).await {
        Ok(stream) => partitions_from_metadata(
            stream
                .cached_info()
                .config
                .metadata
                .get(PARTITIONS_METADATA_KEY)
                .map(String::as_str),
        ),
        Err(e) => {
            tracing::debug!(stream = %name, error = %e, "cannot read the stream's partition count; taking one partition");
            1
        }
    }
}

/// The durable pull consumer of partition `k` of one priority. `max_deliver` is unlimited: the dispatcher
/// counts attempts itself and dead-letters (`poison`), because a WorkQueue stream would
/// keep a message that hit MaxDeliver forever without telling anyone. `max_ack_pending`
/// must cover what the dispatcher holds plus its prefetch: a lower value silently stops
/// delivery.
pub fn priority_consumer(
    p: Priority,
    k: u16,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(partition_consumer(p, k)),
        filter_subject: partition_filter(p, k),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_subject_limit_only_when_set() {
        let open = JobsStream::default().config(Priority::P0, 0, 3);
        assert_eq!(open.name, "JETINFER_P0");
        assert_eq!(open.subjects, ["jetinfer.jobs.p0.*"]);
        assert_eq!(open.metadata[PARTITIONS_METADATA_KEY], "3");
        assert_eq!(open.max_messages_per_subject, -1);
        assert!(!open.discard_new_per_subject);
        let capped = JobsStream {
            max_messages_per_subject: 10,
            ..Default::default()
        }
        .config(Priority::P2, 2, 3);
        assert_eq!(capped.name, "JETINFER_P2_2");
        assert!(capped.metadata.is_empty());
        assert_eq!(capped.max_messages_per_subject, 10);
        assert!(capped.discard_new_per_subject);
        assert_eq!(capped.retention, stream::RetentionPolicy::WorkQueue);
    }
}

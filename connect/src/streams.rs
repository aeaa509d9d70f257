//! The JetStream objects every process agrees on: one jobs stream per priority, the
//! dead-letter stream and the durable pull consumer of each priority. The dispatcher
//! creates them from these definitions; tools that run without a dispatcher (the bench
//! baselines) create the same.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use jetinfer_schemas::names::{
    consumer_name, jobs_stream, priority_filter, DLQ_STREAM, JOBS_PREFIX, LEGACY_JOBS_STREAM,
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
    /// The stream of priority `p`'s jobs (`jetinfer.jobs.<p>.>`): WorkQueue retention (a
    /// job leaves the stream when acked), DiscardNew so producers get an error when it is
    /// full — in all, and per subject (model), so one model's burst cannot lock the others
    /// out — and a duplicate window for `Nats-Msg-Id` de-duplication.
    pub fn config(&self, p: Priority) -> stream::Config {
        stream::Config {
            name: jobs_stream(p).to_string(),
            subjects: vec![priority_filter(p)],
            ..self.shared_config()
        }
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

/// The durable pull consumer of one priority. `max_deliver` is unlimited: the dispatcher
/// counts attempts itself and dead-letters (`poison`), because a WorkQueue stream would
/// keep a message that hit MaxDeliver forever without telling anyone. `max_ack_pending`
/// must cover what the dispatcher holds plus its prefetch: a lower value silently stops
/// delivery.
pub fn priority_consumer(
    p: Priority,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(p)),
        filter_subject: priority_filter(p),
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
        let open = JobsStream::default().config(Priority::P0);
        assert_eq!(open.name, "JETINFER_P0");
        assert_eq!(open.subjects, ["jetinfer.jobs.p0.>"]);
        assert_eq!(open.max_messages_per_subject, -1);
        assert!(!open.discard_new_per_subject);
        let capped = JobsStream {
            max_messages_per_subject: 10,
            ..Default::default()
        }
        .config(Priority::P2);
        assert_eq!(capped.max_messages_per_subject, 10);
        assert!(capped.discard_new_per_subject);
        assert_eq!(capped.retention, stream::RetentionPolicy::WorkQueue);
    }
}

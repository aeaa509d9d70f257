//! [`ClientError`]: what can go wrong talking to jetinfer, with a stable
//! [`ClientError::error_type`] per cause, and [`WaitManyTimeout`], what
//! [`Client::wait_many`](crate::Client::wait_many) found before its deadline.
//!
//! A publish that JetStream does not acknowledge is sorted into one of four causes by
//! [`PublishRefusal::classify`] (pure, unit-tested here): the priority's stream is full
//! (back-pressure: retry later), no stream listens on the subject (no dispatcher has created
//! it), the server refused the message for another reason, or no acknowledgement came
//! (timeout, connection lost).

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use jetinfer_connect::ConnectError;
use jetinfer_schemas::JobResult;
use jetinfer_store::StoreError;

/// What can go wrong talking to jetinfer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The job failed the client-side checks (id, model name, inputs, limits); nothing
    /// was published.
    #[error("the job is invalid: {0}")]
    InvalidJob(#[from] jetinfer_schemas::JobError),
    /// The priority's stream is full (its message, byte or per-model limit): back-pressure.
    /// Retry later with the same id (de-duplication makes that safe), or let the client do
    /// it ([`ClientBuilder::retry_when_full`](crate::ClientBuilder::retry_when_full)).
    #[error("the stream for {subject} is full, try again later: {reason}")]
    StreamFull { subject: String, reason: String },
    /// No stream listens on the subject: no dispatcher has created the priority's stream
    /// yet (or NATS answered "no responders").
    #[error("no stream takes {subject}: has a dispatcher created the streams?")]
    NoStream { subject: String },
    /// JetStream answered, but did not accept the job (e.g. the message is over the
    /// server's `max_payload`).
    #[error("JetStream refused the job: {0}")]
    Rejected(String),
    /// No acknowledgement arrived (timeout, connection lost, too many publishes awaiting
    /// theirs): the job may or may not be stored. Retry with the same id.
    #[error("no publish acknowledgement for {subject}: {reason}")]
    Unacknowledged { subject: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no result for {id} within {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    /// Some of the jobs given to `wait_many` had no result by the deadline; the error
    /// carries the ids still missing and every result that did arrive.
    #[error("{}", .0)]
    TimeoutMany(Box<WaitManyTimeout>),
    /// The result stored under the job's id belongs to another job (other inputs, model
    /// or version): ids are one namespace per deployment; publish again under a new id.
    #[error("id conflict: the result stored under {id} answers another job ({detail})")]
    IdConflict { id: String, detail: String },
}

impl ClientError {
    /// A short stable name of the cause, for metric labels and scripts.
    pub fn error_type(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::InvalidJob(_) => "invalid_job",
            ClientError::StreamFull { .. } => "stream_full",
            ClientError::NoStream { .. } => "no_stream",
            ClientError::Rejected(_) => "rejected",
            ClientError::Unacknowledged { .. } => "unacknowledged",
            ClientError::Store(_) => "store",
            ClientError::Timeout { .. } => "timeout",
            ClientError::TimeoutMany(_) => "timeout",
            ClientError::IdConflict { .. } => "id_conflict",
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect(_)
                | ClientError::StreamFull { .. }
                | ClientError::NoStream { .. }
                | ClientError::Unacknowledged { .. }
                | ClientError::Store(_)
                | ClientError::Timeout { .. }
                | ClientError::TimeoutMany(_)
        )
    }
}

/// Why a publish to `subject` got no acknowledgement, sorted into the causes of
/// [`ClientError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishRefusal {
    StreamFull(String),
    NoStream,
    Rejected(String),
    Unacknowledged(String),
}

impl PublishRefusal {
    /// Sorts an async-nats publish error. JetStream reports a full stream (DiscardNew) as
    /// error code 10077 "maximum messages exceeded" / "maximum bytes exceeded" /
    /// "maximum messages per subject exceeded", and a server out of storage as
    /// "insufficient resources" (10023); both are back-pressure.
    pub(crate) fn of(e: &PublishError) -> Self {
        let source = std::error::Error::source(e).map(|s| s.to_string());
        Self::classify(e.kind(), source.as_deref().unwrap_or(""))
    }

    /// The pure part of [`PublishRefusal::of`]: the error's kind and its source's message.
    pub(crate) fn classify(kind: PublishErrorKind, source: &str) -> Self {
        let text = if source.is_empty() {
            kind.to_string()
        } else {
            source.to_string()
        };
        match kind {
            PublishErrorKind::StreamNotFound => PublishRefusal::NoStream,
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => PublishRefusal::Unacknowledged(text),
            _ => {
                let lower = source.to_ascii_lowercase();
                let full = lower.contains("maximum messages")
                    || lower.contains("maximum bytes")
                    || lower.contains("insufficient resources")
                    || lower.contains("error code 10077")
                    || lower.contains("error code 10023");
                if full {
                    PublishRefusal::StreamFull(text)
                } else if lower.contains("no stream") || lower.contains("error code 10059") {
                    PublishRefusal::NoStream
                } else {
                    PublishRefusal::Rejected(text)
                }
            }
        }
    }

    /// The error for a publish to `subject`.
    pub(crate) fn into_error(self, subject: &str) -> ClientError {
        let subject = subject.to_string();
        match self {
            PublishRefusal::StreamFull(reason) => ClientError::StreamFull { subject, reason },
            PublishRefusal::NoStream => ClientError::NoStream { subject },
            PublishRefusal::Rejected(reason) => {
                ClientError::Rejected(format!("{reason} (subject {subject})"))
            }
            PublishRefusal::Unacknowledged(reason) => {
                ClientError::Unacknowledged { subject, reason }
            }
        }
    }
}

/// The state of a `wait_many` call at its deadline.
#[derive(Debug, Clone)]
pub struct WaitManyTimeout {
    /// The ids without a result, each once, in the order they were given.
    pub missing: Vec<String>,
    /// One entry per id given, in the same order: the result, or `None` while missing.
    pub results: Vec<Option<JobResult<'static>>>,
    pub timeout: Duration,
}

impl std::fmt::Display for WaitManyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        write!(
            f,
            "{} of {} results missing after {:?}: {:?}",
            self.missing.len(),
            self.results.len(),
            self.timeout,
            &self.missing[..self.missing.len().min(SHOWN)]
        )?;
        if self.missing.len() > SHOWN {
            write!(f, " and {} more", self.missing.len() - SHOWN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_refusals_sort_into_their_causes() {
        use PublishErrorKind as K;
        // The messages nats-server 2.10+ sends, as async-nats prints them.
        let full = "maximum messages exceeded (code 503, error code 10077)";
        assert_eq!(
            PublishRefusal::classify(K::Other, full),
            PublishRefusal::StreamFull(full.into())
        );
        let bytes = "maximum bytes exceeded (code 503, error code 10077)";
        assert!(matches!(
            PublishRefusal::classify(K::Other, bytes),
            PublishRefusal::StreamFull(_)
        ));
        let per_subject = "maximum messages per subject exceeded (code 503, error code 10077)";
        assert!(matches!(
            PublishRefusal::classify(K::Other, per_subject),
            PublishRefusal::StreamFull(_)
        ));
        assert_eq!(
            PublishRefusal::classify(K::StreamNotFound, ""),
            PublishRefusal::NoStream
        );
        assert!(matches!(
            PublishRefusal::classify(K::TimedOut, ""),
            PublishRefusal::Unacknowledged(r) if r.contains("timed out")
        ));
        let big = "message size exceeds maximum allowed (code 400, error code 10054)";
        assert_eq!(
            PublishRefusal::classify(K::Other, big),
            PublishRefusal::Rejected(big.into())
        );
    }

    #[test]
    fn every_cause_has_its_type_and_message() {
        let full = PublishRefusal::StreamFull("maximum messages exceeded".into())
            .into_error("jetinfer.jobs.p2.mlp");
        assert_eq!(full.error_type(), "stream_full");
        assert!(full.is_retryable());
        assert_eq!(
            full.to_string(),
            "the stream for jetinfer.jobs.p2.mlp is full, try again later: maximum messages exceeded"
        );
        let none = PublishRefusal::NoStream.into_error("jetinfer.jobs.p0.x");
        assert_eq!(none.error_type(), "no_stream");
        assert!(none.to_string().contains("jetinfer.jobs.p0.x"), "{none}");
        let other = PublishRefusal::Rejected("too big".into()).into_error("s");
        assert_eq!(other.error_type(), "rejected");
        assert!(!other.is_retryable());
        let conflict = ClientError::IdConflict {
            id: "j".into(),
            detail: "other inputs".into(),
        };
        assert_eq!(conflict.error_type(), "id_conflict");
        assert!(!conflict.is_retryable());
    }
}

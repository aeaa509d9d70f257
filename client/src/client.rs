//! [`Client`]: publish jobs to JetStream and read their results from Redis.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::StreamExt;
use jetinfer_schemas::names::{done_subject, job_subject};
use jetinfer_schemas::{encode, Job, JobResult, Limits, Priority};
use tracing::Instrument;

use jetinfer_connect::{ConnectError, NatsSettings};
use jetinfer_store::{ResultStore, StoreConfig, StoreError};

/// What can go wrong talking to jetinfer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the job is invalid: {0}")]
    InvalidJob(#[from] jetinfer_schemas::JobError),
    /// JetStream refused the job (stream full, no stream, server down): retry later with
    /// the same id; de-duplication makes the retry safe.
    #[error("JetStream did not accept the job: {0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no result for {id} within {timeout:?}")]
    Timeout { id: String, timeout: Duration },
}

/// A producer and result reader.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    store: ResultStore,
    limits: Limits,
}

/// The publish acknowledgement of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    /// True when JetStream had already stored a job with this id (de-duplicated).
    pub duplicate: bool,
}

impl Client {
    /// Connects to NATS and prepares the Redis pool.
    pub async fn connect(nats_url: &str, redis: &StoreConfig) -> Result<Self, ClientError> {
        Self::connect_with(
            &NatsSettings::new(nats_url).retry_on_initial_connect(),
            redis,
        )
        .await
    }

    /// Connects with explicit NATS settings (name, timeouts, retry) and prepares the Redis pool.
    pub async fn connect_with(
        nats: &NatsSettings,
        redis: &StoreConfig,
    ) -> Result<Self, ClientError> {
        let nats = nats.connect().await?;
        Ok(Self::from_parts(nats, ResultStore::new(redis)?))
    }

    /// Builds a client over an existing NATS connection and store.
    pub fn from_parts(nats: async_nats::Client, store: ResultStore) -> Self {
        let js = jetstream::new(nats.clone());
        Client {
            nats,
            js,
            store,
            limits: Limits::default(),
        }
    }

    /// The core NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The result store.
    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    /// Publishes a job on `jetinfer.jobs.<priority>.<model>` with `Nats-Msg-Id: <id>` and
    /// waits for JetStream's acknowledgement. The job is checked first, so a malformed job
    /// fails here rather than as an error result.
    pub async fn submit(
        &self,
        priority: Priority,
        job: &Job<'_>,
    ) -> Result<Submitted, ClientError> {
        job.validate(&self.limits)?;
        // The producer's span of the job's trace; `publish_raw` puts its context in the
        // `traceparent` header (only when spans are exported).
        let span = tracing::info_span!(
            "jetinfer.publish",
            otel.kind = "producer",
            job.id = %job.id,
            model = %job.model,
            priority = %priority,
            trace_id = tracing::field::Empty,
        );
        #[cfg(feature = "otel")]
        crate::otel::record_trace_id(&span);
        let ack = self
            .publish_raw(
                &job_subject(priority, &job.model),
                &job.id,
                encode(job).into(),
            )
            .instrument(span)
            .await?;
        Ok(Submitted {
            id: job.id.to_string(),
            duplicate: ack,
        })
    }

    /// Publishes raw bytes as a job message (for tests and other tools); returns whether
    /// JetStream reported a duplicate.
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<bool, ClientError> {
        let mut headers = HeaderMap::new();
        if !msg_id.is_empty() {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        }
        #[cfg(feature = "otel")]
        crate::otel::inject_current(&mut headers);
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|e| ClientError::Rejected(e.to_string()))?
            .await
            .map_err(|e| ClientError::Rejected(e.to_string()))?;
        Ok(ack.duplicate)
    }

    /// The result of a job, or `None` while it is not finished.
    pub async fn get(&self, id: &str) -> Result<Option<JobResult<'static>>, ClientError> {
        Ok(self.store.get(id).await?)
    }

    /// Waits for a job's result: listens for its completion notice on
    /// `jetinfer.done.<id>` and polls Redis as a fallback (a notice can be missed, e.g.
    /// when the job finished before we subscribed).
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<JobResult<'static>, ClientError> {
        let mut done = self.nats.subscribe(done_subject(id)).await.ok();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut poll_every = Duration::from_millis(20);
        loop {
            if let Some(r) = self.store.get(id).await? {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    id: id.to_string(),
                    timeout,
                });
            }
            let nap = poll_every.min(deadline - now);
            match done.as_mut() {
                Some(sub) => {
                    let _ = tokio::time::timeout(nap, sub.next()).await;
                }
                None => tokio::time::sleep(nap).await,
            }
            poll_every = (poll_every * 2).min(Duration::from_millis(500));
        }
    }
}

//! [`Client`]: connect, publish jobs to JetStream (inputs by reference when large, spread
//! over the priority's partition streams, retry with back-off when the stream is full if
//! asked), and read results from Redis. Waiting for results is in `wait.rs`.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use jetinfer_schemas::inputs_ref::{store_inputs, DEFAULT_INLINE_LIMIT};
use jetinfer_schemas::partitions::{partition_for, partition_subject};
use jetinfer_schemas::{encode, now_ms, Job, JobResult, Limits, Priority};
use tracing::Instrument;

use jetinfer_connect::NatsSettings;
use jetinfer_store::{InputStores, ResultStore, StoreConfig};

use crate::error::{ClientError, PublishRefusal};
use crate::partitions::PartitionCounts;
use crate::retry::RetryPolicy;

/// How long inputs sent by reference stay in Redis when the job names no deadline (the
/// worker deletes them as soon as the result is stored).
pub const DEFAULT_INPUTS_TTL: Duration = Duration::from_secs(3600);
/// Kept beyond a job's own deadline, for the clocks of producer and dispatcher to differ.
const INPUTS_TTL_MARGIN: Duration = Duration::from_secs(60);

/// A producer and result reader.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    store: ResultStore,
    /// Where inputs sent by reference go: the result store, and more Redis servers if given.
    inputs: InputStores,
    limits: Limits,
    /// Jobs whose input data is at least this many bytes send their inputs by reference.
    inline_limit: usize,
    inputs_ttl: Duration,
    /// Retry publishes refused by a full stream (off when `None`).
    retry_full: Option<RetryPolicy>,
    /// Each priority's partition streams, read from JetStream (or fixed).
    partitions: PartitionCounts,
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
            inputs: InputStores::single(store.clone()),
            store,
            limits: Limits::default(),
            inline_limit: DEFAULT_INLINE_LIMIT,
            inputs_ttl: DEFAULT_INPUTS_TTL,
            retry_full: None,
            partitions: PartitionCounts::default(),
        }
    }

    /// Spreads every priority's jobs over `n` partition streams without asking JetStream how
    /// many there are (by default the client reads the count the dispatcher publishes, see
    /// [`jetinfer_schemas::partitions`]). `n` must not exceed the dispatcher's
    /// `--partitions`: a partition with no stream refuses the job ([`ClientError::NoStream`]).
    pub fn with_partitions(mut self, n: u16) -> Self {
        self.partitions = PartitionCounts::fixed(n);
        self
    }

    /// Retries publishes that a full stream refuses, with this back-off (see
    /// [`RetryPolicy`]); `None` (the default) returns [`ClientError::StreamFull`] at once.
    pub fn with_retry_when_full(mut self, policy: Option<RetryPolicy>) -> Self {
        self.retry_full = policy;
        self
    }

    /// Jobs whose input data totals at least `bytes` keep their inputs in Redis and carry a
    /// reference (see [`jetinfer_schemas::inputs_ref`]); `usize::MAX` sends every job
    /// inline, as version 1 of the wire format did. Default
    /// [`DEFAULT_INLINE_LIMIT`](jetinfer_schemas::inputs_ref::DEFAULT_INLINE_LIMIT).
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    /// Spreads inputs sent by reference over these stores (the result store first; see
    /// [`InputStores`]): workers must be given the same extra stores, in the same order.
    pub fn with_input_stores(mut self, stores: InputStores) -> Self {
        self.inputs = stores;
        self
    }

    /// How long inputs sent by reference stay in Redis when a job names no deadline
    /// (default [`DEFAULT_INPUTS_TTL`]); with a deadline, until a minute after it. Jobs
    /// still queued when their inputs expire end as `bad_payload`.
    pub fn with_inputs_ttl(mut self, ttl: Duration) -> Self {
        self.inputs_ttl = ttl;
        self
    }

    /// The core NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The JetStream context over [`Client::nats`].
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The result store.
    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    /// The limits jobs are checked against before publishing.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Publishes a job on `jetinfer.jobs.<priority>.<model>` (followed by `.<k>` in
    /// partition k ≥ 1, chosen from the job id) with `Nats-Msg-Id: <id>` and waits for
    /// JetStream's acknowledgement. The job is checked first, so a malformed job fails here
    /// rather than as an error result.
    pub async fn submit(
        &self,
        priority: Priority,
        job: &Job<'_>,
    ) -> Result<Submitted, ClientError> {
        job.validate(&self.limits)?;
        let partitions = self.partitions.count(&self.js, priority).await;
        let partition = partition_for(&job.id, partitions);
        match self.submit_to(priority, partition, job).await {
            // The dispatcher may run with fewer partitions now: ask again, publish again.
            Err(ClientError::NoStream { .. })
                if partition > 0 && self.partitions.forget(priority) =>
            {
                let partitions = self.partitions.count(&self.js, priority).await;
                let partition = partition_for(&job.id, partitions);
                self.submit_to(priority, partition, job).await
            }
            // No stream at all yet (no dispatcher has started): the count read meanwhile
            // (one partition) is forgotten too, so it is read again once the streams exist.
            Err(e @ ClientError::NoStream { .. }) => {
                self.partitions.forget(priority);
                Err(e)
            }
            submitted => submitted,
        }
    }

    /// The subject a job `id` of `model` is published on at `priority`: its partition's
    /// (see [`Client::with_partitions`]). For tools that publish with
    /// [`Client::publish_job`] instead of [`Client::submit`].
    pub async fn job_subject(&self, priority: Priority, model: &str, id: &str) -> String {
        let partitions = self.partitions.count(&self.js, priority).await;
        partition_subject(priority, model, partition_for(id, partitions))
    }

    /// [`Client::submit`] to partition `partition` of `priority`.
    async fn submit_to(
        &self,
        priority: Priority,
        partition: u16,
        job: &Job<'_>,
    ) -> Result<Submitted, ClientError> {
        // The producer's span of the job's trace, after the OpenTelemetry messaging
        // conventions; with feature `otel`, `publish_raw` puts its context in the
        // `traceparent`/`tracestate` headers (only when spans are exported).
        let subject = partition_subject(priority, &job.model, partition);
        let span = tracing::info_span!(
            "jetinfer.publish",
            otel.name = %format_args!("publish {subject}"),
            otel.kind = "producer",
            "messaging.system" = "nats",
            "messaging.operation.type" = "publish",
            "messaging.destination.name" = %subject,
            "messaging.message.id" = %job.id,
            "jetinfer.model" = %job.model,
            "jetinfer.priority" = %priority,
            trace_id = tracing::field::Empty,
        );
        #[cfg(feature = "otel")]
        crate::otel::record_trace_id(&span);
        let ack = self.publish_job(&subject, job).instrument(span).await?;
        Ok(Submitted {
            id: job.id.to_string(),
            duplicate: ack,
        })
    }

    /// Publishes a job on `subject` (not checked), its inputs by reference when they are
    /// large (see [`Client::with_inline_limit`]): they are stored in Redis first, so a
    /// job JetStream accepted always finds them. Returns whether JetStream reported a
    /// duplicate.
    pub async fn publish_job(&self, subject: &str, job: &Job<'_>) -> Result<bool, ClientError> {
        let data_bytes: usize = job.inputs.iter().map(|t| t.data.len()).sum();
        if job.inputs_ref.is_some() || data_bytes < self.inline_limit {
            return self.publish_raw(subject, &job.id, encode(job).into()).await;
        }
        let (value, mut reference) = store_inputs(&job.inputs);
        reference.store = self
            .inputs
            .put(&job.id, &value, self.inputs_ttl_of(job))
            .await?;
        // Every field named, so a field added to `Job` cannot be dropped here unnoticed.
        let by_ref = Job {
            v: job.v,
            id: job.id.as_ref().into(),
            model: job.model.as_ref().into(),
            version: job.version.as_deref().map(Into::into),
            inputs: Vec::new(),
            inputs_ref: Some(reference),
            deadline_ms: job.deadline_ms,
            cache: job.cache,
            meta: job.meta.clone(),
        };
        self.publish_raw(subject, &job.id, encode(&by_ref).into())
            .await
    }

    /// Until a minute after the job's deadline, or [`Client::with_inputs_ttl`].
    fn inputs_ttl_of(&self, job: &Job<'_>) -> Duration {
        match job.deadline_ms {
            Some(deadline) => {
                Duration::from_millis(deadline.saturating_sub(now_ms())) + INPUTS_TTL_MARGIN
            }
            None => self.inputs_ttl,
        }
    }

    /// Publishes raw bytes as a job message (for tests and other tools); returns whether
    /// JetStream reported a duplicate. A refusal is typed ([`ClientError::StreamFull`],
    /// [`ClientError::NoStream`], [`ClientError::Rejected`],
    /// [`ClientError::Unacknowledged`]); a full stream is retried with back-off when the
    /// client was built with [`Client::with_retry_when_full`].
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
        let first_refusal = tokio::time::Instant::now();
        let mut retry = 0;
        loop {
            let refusal = match self.publish_once(subject, &headers, payload.clone()).await {
                Ok(duplicate) => return Ok(duplicate),
                Err(refusal) => refusal,
            };
            let pause = match (&refusal, &self.retry_full) {
                (PublishRefusal::StreamFull(_), Some(policy)) => {
                    policy.delay(retry, first_refusal.elapsed())
                }
                _ => None,
            };
            let Some(pause) = pause else {
                return Err(refusal.into_error(subject));
            };
            tracing::debug!(
                subject,
                msg_id,
                retry,
                ?pause,
                "stream full, publishing again after a pause"
            );
            tokio::time::sleep(pause).await;
            retry += 1;
        }
    }

    /// One publish and its acknowledgement; `Ok(duplicate)` or why it was refused.
    async fn publish_once(
        &self,
        subject: &str,
        headers: &HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<bool, PublishRefusal> {
        let ack = self
            .js
            .publish_with_headers(subject.to_string(), headers.clone(), payload)
            .await
            .map_err(|e| PublishRefusal::of(&e))?
            .await
            .map_err(|e| PublishRefusal::of(&e))?;
        Ok(ack.duplicate)
    }

    /// The result of a job, or `None` while it is not finished.
    pub async fn get(&self, id: &str) -> Result<Option<JobResult<'static>>, ClientError> {
        Ok(self.store.get(id).await?)
    }
}

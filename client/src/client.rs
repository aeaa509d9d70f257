//! [`Client`]: publish jobs to JetStream and read their results from Redis, one job
//! ([`Client::wait`]) or many at once ([`Client::wait_many`]).

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::stream::SelectAll;
use futures::{FutureExt, StreamExt};
use jetinfer_schemas::inputs_ref::{store_inputs, DEFAULT_INLINE_LIMIT};
use jetinfer_schemas::names::{done_subject, job_subject};
use jetinfer_schemas::{encode, now_ms, Job, JobResult, Limits, Priority};
use tokio::time::Instant;
use tracing::Instrument;

use jetinfer_connect::NatsSettings;
use jetinfer_store::{ResultStore, StoreConfig};

use crate::error::ClientError;
use crate::gather::{id_of_notice, notice_subjects, Gather, MGET_CHUNK};

/// The longest pause between two polls of Redis while waiting.
const POLL_MAX: Duration = Duration::from_millis(500);
/// The first pause between two polls; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(20);

/// How long inputs sent by reference stay in Redis when the job names no deadline (the
/// worker deletes them as soon as the result is stored).
pub const DEFAULT_INPUTS_TTL: Duration = Duration::from_secs(3600);
/// Kept beyond a job's own deadline, for the clocks of producer and dispatcher to differ.
const INPUTS_TTL_MARGIN: Duration = Duration::from_secs(60);

/// The completion notices one `wait_many` listens to.
type Notices = SelectAll<async_nats::Subscriber>;

/// A producer and result reader.
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    store: ResultStore,
    limits: Limits,
    /// Jobs whose input data is at least this many bytes send their inputs by reference.
    inline_limit: usize,
    inputs_ttl: Duration,
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
            inline_limit: DEFAULT_INLINE_LIMIT,
            inputs_ttl: DEFAULT_INPUTS_TTL,
        }
    }

    /// Jobs whose input data totals at least `bytes` keep their inputs in Redis and carry a
    /// reference (see [`jetinfer_schemas::inputs_ref`]); `usize::MAX` sends every job
    /// inline, as version 1 of the wire format did. Default
    /// [`DEFAULT_INLINE_LIMIT`](jetinfer_schemas::inputs_ref::DEFAULT_INLINE_LIMIT).
    pub fn with_inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
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

    /// Publishes a job on `jetinfer.jobs.<priority>.<model>` with `Nats-Msg-Id: <id>` and
    /// waits for JetStream's acknowledgement. The job is checked first, so a malformed job
    /// fails here rather than as an error result.
    pub async fn submit(
        &self,
        priority: Priority,
        job: &Job<'_>,
    ) -> Result<Submitted, ClientError> {
        job.validate(&self.limits)?;
        // The producer's span of the job's trace, after the OpenTelemetry messaging
        // conventions; with feature `otel`, `publish_raw` puts its context in the
        // `traceparent`/`tracestate` headers (only when spans are exported).
        let subject = job_subject(priority, &job.model);
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
        let (value, reference) = store_inputs(&job.inputs);
        self.store
            .put_inputs(&job.id, &value, self.inputs_ttl_of(job))
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
        let mut poll_every = POLL_FIRST;
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
            poll_every = (poll_every * 2).min(POLL_MAX);
        }
    }

    /// Waits for the results of many jobs at once and returns them in the order of `ids`
    /// (an id given twice gets its result twice). Listens for completion notices (each
    /// id's `jetinfer.done.<id>`, or one `jetinfer.done.>` subscription for a long list)
    /// and fetches the announced results; in between, polls Redis for all missing ids with
    /// batched `MGET`s as a fallback, like [`Client::wait`]. At the deadline it fails with
    /// [`ClientError::TimeoutMany`], which lists the missing ids and keeps every result
    /// that arrived.
    pub async fn wait_many<S: AsRef<str>>(
        &self,
        ids: &[S],
        timeout: Duration,
    ) -> Result<Vec<JobResult<'static>>, ClientError> {
        let mut gather = Gather::new(ids);
        let deadline = Instant::now() + timeout;
        let mut notices = if gather.is_complete() {
            None
        } else {
            self.subscribe_notices(gather.unique_ids()).await
        };
        let mut poll_every = POLL_FIRST;
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sweep || now >= deadline {
                // The sweep covers the announced ids too.
                gather.take_announced();
                let missing = gather.missing();
                self.fetch_into(&mut gather, &missing).await?;
                next_sweep = now + poll_every;
                poll_every = (poll_every * 2).min(POLL_MAX);
            } else {
                let announced = gather.take_announced();
                self.fetch_into(&mut gather, &announced).await?;
            }
            if gather.is_complete() || now >= deadline {
                return gather.finish(timeout).map_err(ClientError::TimeoutMany);
            }
            let wake = next_sweep.min(deadline);
            if !next_notice(notices.as_mut(), &mut gather, wake).await {
                notices = None;
            }
        }
    }

    /// Subscribes to the completion notices of these ids; `None` when NATS refuses (the
    /// wait then relies on polling alone).
    async fn subscribe_notices(&self, unique_ids: &[String]) -> Option<Notices> {
        let mut all = SelectAll::new();
        for subject in notice_subjects(unique_ids) {
            all.push(self.nats.subscribe(subject).await.ok()?);
        }
        Some(all)
    }

    /// Fetches the results of `ids` with `MGET`s of at most [`MGET_CHUNK`] keys.
    async fn fetch_into(&self, gather: &mut Gather, ids: &[String]) -> Result<(), ClientError> {
        for chunk in ids.chunks(MGET_CHUNK) {
            let got = self.store.get_many(chunk).await?;
            gather.fill(chunk, got);
        }
        Ok(())
    }
}

/// Waits until a notice announces an id `gather` still waits for (taking the notices
/// already queued behind it too) or until `wake`. Returns false when the notices ended
/// (connection closed): the caller stops listening and polls.
async fn next_notice(notices: Option<&mut Notices>, gather: &mut Gather, wake: Instant) -> bool {
    let Some(notices) = notices else {
        tokio::time::sleep_until(wake).await;
        return true;
    };
    let sleep = tokio::time::sleep_until(wake);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            notice = notices.next() => {
                let Some(notice) = notice else { return false };
                if !id_of_notice(notice.subject.as_str()).is_some_and(|id| gather.announce(id)) {
                    continue;
                }
                while let Some(Some(more)) = notices.next().now_or_never() {
                    if let Some(id) = id_of_notice(more.subject.as_str()) {
                        gather.announce(id);
                    }
                }
                return true;
            }
            _ = &mut sleep => return true,
        }
    }
}

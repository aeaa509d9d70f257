//! Waiting for results: [`Client::wait`] (one job), [`Client::submit_and_wait`] (publish
//! and wait, subscribed before publishing) and [`Client::wait_many`] (many jobs over one
//! subscription). Completion notices (`jetinfer.done.<id>`, docs/wire-format.md §7) wake
//! the waiter; Redis is read for the result itself and polled as a fallback, since a
//! notice is not stored and can be missed.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jetinfer_schemas::names::done_subject;
use jetinfer_schemas::{Job, JobResult, Priority};
use tokio::time::Instant;

use crate::error::ClientError;
use crate::gather::{id_of_notice, notice_subject, Gather, MGET_CHUNK};
use crate::Client;

/// The longest pause between two polls of Redis while waiting.
const POLL_MAX: Duration = Duration::from_millis(500);
/// The first pause between two polls; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(20);

impl Client {
    /// Waits for a job's result: listens for its completion notice on
    /// `jetinfer.done.<id>` and polls Redis as a fallback (a notice can be missed, e.g.
    /// when the job finished before we subscribed).
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<JobResult<'static>, ClientError> {
        let done = self.nats().subscribe(done_subject(id)).await.ok();
        self.wait_on(id, done, timeout).await
    }

    /// Publishes a job (as [`Client::submit`], with its retries when the stream is full)
    /// and waits up to `timeout` for its result. The completion notice is subscribed to
    /// before publishing, so even a result written at once is noticed. A stored result
    /// that belongs to another job with the same id (other inputs, model or version, as
    /// its `inputs_digest`, `model` and `version` say) is [`ClientError::IdConflict`],
    /// never returned as this job's.
    pub async fn submit_and_wait(
        &self,
        priority: Priority,
        job: &Job<'_>,
        timeout: Duration,
    ) -> Result<JobResult<'static>, ClientError> {
        job.validate(self.limits())?;
        let done = self.nats().subscribe(done_subject(&job.id)).await.ok();
        self.submit(priority, job).await?;
        let result = self.wait_on(&job.id, done, timeout).await?;
        if !result.answers(job) {
            return Err(ClientError::IdConflict {
                id: job.id.to_string(),
                detail: format!(
                    "it was written for model {:?} version {:?}, inputs digest {:?}",
                    result.model, result.version, result.inputs_digest
                ),
            });
        }
        Ok(result)
    }

    /// The wait of [`Client::wait`] on a subscription already made (`None`: poll only).
    async fn wait_on(
        &self,
        id: &str,
        mut done: Option<async_nats::Subscriber>,
        timeout: Duration,
    ) -> Result<JobResult<'static>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut poll_every = POLL_FIRST;
        loop {
            if let Some(r) = self.store().get(id).await? {
                return Ok(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    id: id.to_string(),
                    timeout,
                });
            }
            let nap = poll_every.min(deadline - now);
            match done.as_mut() {
                Some(sub) => {
                    if let Ok(None) = tokio::time::timeout(nap, sub.next()).await {
                        done = None; // the connection closed: poll from now on
                    }
                }
                None => tokio::time::sleep(nap).await,
            }
            poll_every = (poll_every * 2).min(POLL_MAX);
        }
    }

    /// Waits for the results of many jobs at once and returns them in the order of `ids`
    /// (an id given twice gets its result twice). Listens on ONE subscription — the id's
    /// own `jetinfer.done.<id>` for a single id, `jetinfer.done.>` for more, keeping the
    /// notices of the ids it waits for — and fetches the announced results; in between,
    /// polls Redis for all missing ids with batched `MGET`s as a fallback, like
    /// [`Client::wait`]. At the deadline it fails with [`ClientError::TimeoutMany`], which
    /// lists the missing ids and keeps every result that arrived.
    pub async fn wait_many<S: AsRef<str>>(
        &self,
        ids: &[S],
        timeout: Duration,
    ) -> Result<Vec<JobResult<'static>>, ClientError> {
        let mut gather = Gather::new(ids);
        let deadline = Instant::now() + timeout;
        let mut notices = match notice_subject(gather.unique_ids()) {
            Some(subject) => self.nats().subscribe(subject).await.ok(),
            None => None,
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

    /// Fetches the results of `ids` with `MGET`s of at most [`MGET_CHUNK`] keys.
    async fn fetch_into(&self, gather: &mut Gather, ids: &[String]) -> Result<(), ClientError> {
        for chunk in ids.chunks(MGET_CHUNK) {
            let got = self.store().get_many(chunk).await?;
            gather.fill(chunk, got);
        }
        Ok(())
    }
}

/// Waits until a notice announces an id `gather` still waits for (taking the notices
/// already queued behind it too) or until `wake`. Returns false when the notices ended
/// (connection closed): the caller stops listening and polls.
async fn next_notice(
    notices: Option<&mut async_nats::Subscriber>,
    gather: &mut Gather,
    wake: Instant,
) -> bool {
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

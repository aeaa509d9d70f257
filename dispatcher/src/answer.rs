//! Jobs the dispatcher answers itself (bad payload, invalid input, unknown model, expired,
//! poison): store the error result first, announce it, then terminate the message.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use jetinfer_schemas::names::{
    dlq_subject, done_subject, job_subject, DLQ_FAILURES_HEADER, DLQ_REASON_HEADER,
    DLQ_SUBJECT_HEADER,
};
use jetinfer_schemas::{encode, now_ms, JobError, JobResult};
use jetinfer_store::{ResultStore, ResultWrite};

use crate::job::{HeldJob, JobAck};

/// Delay before a job whose error could not be stored comes back.
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct Answerer {
    pub store: ResultStore,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// Written as the result's `worker` field.
    pub name: String,
}

/// Who the error result is for.
pub(crate) struct ErrorTarget<'a> {
    /// None when no valid id is known: nothing can be written, the message is dropped.
    pub id: Option<&'a str>,
    pub model: &'a str,
    pub attempts: u32,
    pub published_ms: u64,
    pub meta: BTreeMap<String, String>,
}

impl Answerer {
    /// Stores the error result (first result wins) and terminates the message. If Redis is
    /// unreachable the message is nak'ed instead: nothing is acked before its result is stored.
    pub async fn fail(&self, acker: &JobAck, target: ErrorTarget<'_>, error: JobError) {
        tracing::debug!(id = ?target.id, code = %error.code, message = %error.message, "answering job with an error");
        if let Some(id) = target.id {
            let mut result = JobResult::failed(id, target.model, error);
            result.worker = self.name.clone();
            result.attempts = target.attempts;
            result.meta = target.meta;
            result.timings.total_ms = now_ms().saturating_sub(target.published_ms) as f64;
            let status = result.status.as_str();
            match self
                .store
                .put_results(
                    &[ResultWrite {
                        id,
                        bytes: encode(&result),
                        // Referenced inputs stay until their TTL: a dead letter's replay
                        // needs them.
                        drop_inputs: false,
                    }],
                    &[],
                )
                .await
            {
                Ok(stored) => {
                    if stored.first() == Some(&true) {
                        let _ = self.nats.publish(done_subject(id), status.into()).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(id, error = %e, "cannot store error result; the job comes back later");
                    let _ = acker.ack_with(AckKind::Nak(Some(STORE_RETRY_DELAY))).await;
                    return;
                }
            }
        }
        if let Err(e) = acker.ack_with(AckKind::Term).await {
            tracing::warn!(id = ?target.id, error = %e, "term failed; the job will be redelivered and found answered");
        }
    }

    /// A job that keeps losing its runs: copy it to the dead-letter stream with the reason
    /// (for `jetinfer dlq list|replay`), then answer it `poison`. If the copy cannot be made,
    /// the job is handed back (nak) rather than answered without its dead letter.
    pub async fn dead_letter(&self, job: HeldJob, error: JobError) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, job.id.as_str());
        headers.insert(DLQ_REASON_HEADER, error.message.as_str());
        headers.insert(DLQ_FAILURES_HEADER, job.failures.to_string().as_str());
        headers.insert(
            DLQ_SUBJECT_HEADER,
            job_subject(job.priority, &job.route.model).as_str(),
        );
        let published = match self
            .js
            .publish_with_headers(dlq_subject(&job.route.model), headers, job.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            tracing::warn!(id = %job.id, error = %e, "cannot write the dead letter; the job comes back later");
            let _ = job
                .acker
                .ack_with(AckKind::Nak(Some(STORE_RETRY_DELAY)))
                .await;
            return;
        }
        tracing::warn!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), failures = job.failures, "job is poison; copied to the dead-letter stream");
        crate::telemetry::dead_letter(job.priority);
        crate::telemetry::failed(job.priority, &job.route.model, error.code);
        self.fail_held(job, error).await;
    }

    /// [`Answerer::fail`] for a job already in the dispatcher's hands.
    pub async fn fail_held(&self, job: HeldJob, error: JobError) {
        let target = ErrorTarget {
            id: Some(&job.id),
            model: &job.route.model,
            attempts: job.attempt,
            published_ms: job.published_ms,
            meta: job.meta.clone(),
        };
        self.fail(&job.acker, target, error).await;
    }
}

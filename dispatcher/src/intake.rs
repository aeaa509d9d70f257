//! Intake: one task per priority pulls from its durable consumer, but only as many jobs as
//! the priority's in-flight cap allows (a permit per job), triages each message and hands
//! good jobs to the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use jetinfer_schemas::names::parse_job_subject;
use jetinfer_schemas::{decode_job, limits::is_valid_job_id, JobError, Priority};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::answer::{Answerer, ErrorTarget};
use crate::config::Config;
use crate::health;
use crate::job::HeldJob;
use crate::queue::Route;
use crate::scheduler::Command;

pub(crate) struct Intake {
    pub priority: Priority,
    pub consumer: PullConsumer,
    pub permits: Arc<Semaphore>,
    pub config: Arc<Config>,
    pub answer: Answerer,
    pub scheduler: mpsc::Sender<Command>,
    pub store_health: watch::Receiver<bool>,
}

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        let batch = self
            .config
            .pull_batch
            .clamp(1, self.config.in_flight_cap(self.priority));
        while !shutdown.is_cancelled() {
            let pulled = self
                .consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await;
            let mut messages = match pulled {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(priority = %self.priority, error = %e, "cannot pull; retrying");
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
                }
            };
            loop {
                // Pull nothing while results cannot be stored.
                let mut health = self.store_health.clone();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = health::until_reachable(&mut health) => {}
                }
                // Take a slot first: what we cannot hold, we do not pull.
                let permit = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    p = self.permits.clone().acquire_owned() => p.expect("intake semaphore is never closed: this is a bug"),
                };
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    m = messages.next() => m,
                };
                match next {
                    Some(Ok(msg)) => self.triage(msg, permit).await,
                    // A missed heartbeat or a reconnect: the pull goes on (the documented
                    // `while let Some(Ok(..))` loop would stop for good here).
                    Some(Err(e)) => {
                        tracing::warn!(priority = %self.priority, error = %e, "pull error")
                    }
                    None => break,
                }
            }
        }
    }

    /// Decodes and checks one message; answers what can never run; queues the rest.
    async fn triage(&self, msg: Message, permit: OwnedSemaphorePermit) {
        let (delivered, published_ms) = match msg.info() {
            Ok(info) => (
                info.delivered.max(1) as u32,
                (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
            ),
            Err(_) => (1, jetinfer_schemas::now_ms()),
        };
        let (msg, acker) = msg.split();
        let header_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string())
            .filter(|id| is_valid_job_id(id));
        let subject_model = parse_job_subject(msg.subject.as_str())
            .map(|(_, m)| m.to_string())
            .unwrap_or_default();
        crate::telemetry::received(self.priority, &subject_model, delivered);
        let refuse = |id: Option<String>, error: JobError| {
            let model = subject_model.clone();
            let acker = &acker;
            async move {
                let t = ErrorTarget {
                    id: id.as_deref(),
                    model: &model,
                    attempts: delivered,
                    published_ms,
                    meta: Default::default(),
                };
                crate::telemetry::failed(self.priority, &model, error.code);
                self.answer.fail(acker, t, error).await;
            }
        };

        let limits = self.config.limits();
        let job = match decode_job(&msg.payload, &limits) {
            Ok(job) => job,
            Err(e) => return refuse(header_id, e).await,
        };
        if let Err(e) = job.validate(&limits) {
            let id = if is_valid_job_id(&job.id) {
                Some(job.id.to_string())
            } else {
                header_id
            };
            return refuse(id, e).await;
        }
        let id = job.id.to_string();
        if job.model != subject_model {
            let e = JobError::invalid_input(format!(
                "job model {:?} differs from the subject's {subject_model:?}",
                job.model
            ));
            return refuse(Some(id), e).await;
        }
        // A redelivery (lost ack) or a resubmission after the duplicate window may find the
        // job already answered: ack it, don't run it again. Redis down: wait for it, holding
        // the message (nak would spend its redelivery budget).
        let (answered, failures) = loop {
            match self.answer.store.job_state(&id).await {
                Ok(state) => break state,
                Err(e) => {
                    tracing::warn!(id, error = %e, "result store unreachable; holding the job until it returns");
                    let _ = acker.ack_with(AckKind::Progress).await;
                    let mut health = self.store_health.clone();
                    tokio::select! {
                        _ = health::until_reachable(&mut health) => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        if answered {
            tracing::debug!(
                id,
                delivered,
                "job already has a result; acking without running"
            );
            let _ = acker.ack().await;
            return;
        }
        let deadline_ms = match job.deadline_ms {
            // The producer's clock: allow for it running behind ours.
            Some(d) => d.saturating_add(self.config.clock_skew_tolerance_ms),
            // JetStream's timestamp: the server's clock, relative to publish.
            None => published_ms + self.config.default_deadline(self.priority).as_millis() as u64,
        };
        let traceparent = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_string());
        let held = HeldJob {
            route: Route {
                model: job.model.to_string(),
                version: job.version.as_deref().map(str::to_string),
            },
            priority: self.priority,
            span: crate::telemetry::job_span(
                &job.id,
                &job.model,
                self.priority,
                delivered,
                traceparent.as_deref(),
                published_ms,
            ),
            deadline_ms,
            published_ms,
            attempt: delivered,
            failures,
            traceparent,
            meta: job.meta.clone().unwrap_or_default(),
            since: Instant::now(),
            id,
            payload: msg.payload.clone(),
            acker,
            _permit: permit,
        };
        drop(job);
        if self.scheduler.send(Command::Enqueue(held)).await.is_err() {
            tracing::debug!("scheduler stopped; message will be redelivered");
        }
    }
}

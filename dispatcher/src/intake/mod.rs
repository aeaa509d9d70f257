//! Intake: one task per partition stream of each priority pulls from its durable consumer,
//! but only as many jobs as the priority's in-flight cap allows (a permit per job), triages
//! each message and hands good jobs to the scheduler.
//!
//! Messages are triaged in groups: the first one is awaited, then whatever else the pull
//! has already delivered (up to `--pull-batch`) joins it. Good first deliveries then go
//! straight to the scheduler (while Redis is reachable); redeliveries go through the
//! intake's lookup task ([`admit`]): one Redis round trip at a time for every group queued
//! while the previous one was under way. Under load groups are large and per-job costs
//! shrink; when idle a group is one job and nothing waits for company.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::Message;
use bytes::Bytes;
use jetinfer_schemas::{Job, JobError, Priority};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::answer::{Answerer, ErrorTarget};
use crate::config::Config;
use crate::events::Command;
use crate::health;
use crate::job::{Held, HeldJob, JobAck};
use crate::routing::payload::VersionSlot;
use crate::routing::{Routes, Target};
use crate::telemetry;
use jetinfer_schemas::Route;

mod admit;
mod pull;
mod triage;

use admit::{Admits, Admitter};
use pull::Pull;

use triage::{validate, Envelope};

/// How long one pull request stays open at the consumer (see `Intake::run`).
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The server's idle heartbeat while a pull request waits: two missed, and the pull asks
/// again.
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

pub(crate) struct Intake {
    pub priority: Priority,
    pub consumer: PullConsumer,
    pub permits: Arc<Semaphore>,
    pub config: Arc<Config>,
    pub answer: Answerer,
    pub scheduler: mpsc::Sender<Command>,
    pub store_health: watch::Receiver<bool>,
    /// Declared models, versions and traffic splits: a job for anything else is answered
    /// here; one that names no version is routed here.
    pub registry: crate::registry::Snapshot,
}

impl Intake {
    pub async fn run(self, shutdown: CancellationToken) {
        let batch = self
            .config
            .pull_batch
            .clamp(1, self.config.in_flight_cap(self.priority));
        let admitter = Admitter {
            store: self.answer.store.clone(),
            nats: self.answer.nats.clone(),
            limits: self.config.limits(),
            scheduler: self.scheduler.clone(),
            health: self.store_health.clone(),
        };
        let admits = Admits::start(admitter, self.config.in_flight_cap(self.priority));
        // Every held job acks through this one client (see `JobAck`).
        let nats = Arc::new(self.answer.nats.clone());
        while !shutdown.is_cancelled() {
            // Short-lived pull requests: one the consumer's old leader held when it went away
            // (a node killed, a leader stepping down) is answered by nobody; the pull's
            // watchdog asks again within 4-8 s of silence (`pull.rs`; tests/tests/nats_cluster.rs
            // saw 30 s of no delivery under load with async-nats's stream and a 30 s expiry).
            // An idle consumer costs one pull request per 5 s.
            let pulled = Pull::start(
                nats.clone(),
                &self.consumer,
                batch,
                PULL_EXPIRES,
                PULL_HEARTBEAT,
            )
            .await;
            let mut pull = match pulled {
                Ok(p) => p,
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
                    m = pull.next() => m,
                };
                let first = match next {
                    Some(Ok(msg)) => msg,
                    // A missed heartbeat, a request the server ended, JetStream without a
                    // leader: the pull asks again on the next call.
                    Some(Err(e)) => {
                        tracing::warn!(priority = %self.priority, error = %e, "pull error");
                        continue;
                    }
                    // The client is closing.
                    None => break,
                };
                let group = self.delivered_with(first, permit, &mut pull, batch);
                self.triage(group, &admits, &nats).await;
            }
        }
    }

    /// `first` and the messages the pull has already delivered, as many as there are
    /// permits for, up to `max`, without waiting for more.
    fn delivered_with(
        &self,
        first: Message,
        permit: OwnedSemaphorePermit,
        pull: &mut Pull,
        max: usize,
    ) -> Vec<(Message, OwnedSemaphorePermit)> {
        let mut group = vec![(first, permit)];
        while group.len() < max {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            match pull.ready() {
                Some(Ok(msg)) => group.push((msg, permit)),
                Some(Err(e)) => {
                    tracing::warn!(priority = %self.priority, error = %e, "pull error");
                    break;
                }
                None => break,
            }
        }
        group
    }

    /// Triages a group of messages: answers what can never run, then hands the rest on
    /// ([`Admits::send`]: to the scheduler, or to the lookup task, so the next pull is read
    /// while a Redis round trip is under way).
    async fn triage(
        &self,
        group: Vec<(Message, OwnedSemaphorePermit)>,
        admits: &Admits,
        nats: &Arc<async_nats::Client>,
    ) {
        // One snapshot for the group: every job is routed by one whole registry state.
        let routes = self.registry.borrow().clone();
        let received = Instant::now();
        let mut jobs = Vec::with_capacity(group.len());
        for (msg, permit) in group {
            if let Some(job) = self.check(msg, permit, &routes, received, nats).await {
                jobs.push(job);
            }
        }
        if jobs.is_empty() {
            return;
        }
        admits.send(jobs).await;
    }

    /// Decodes, checks and routes one message; answers what can never run (and returns
    /// `None`).
    async fn check(
        &self,
        msg: Message,
        permit: OwnedSemaphorePermit,
        routes: &Routes,
        received: Instant,
        nats: &Arc<async_nats::Client>,
    ) -> Option<HeldJob> {
        let envelope = Envelope::of(&msg, received);
        let acker = JobAck::Nats {
            nats: nats.clone(),
            reply: msg.reply,
        };
        telemetry::received(self.priority, &envelope.subject_model, envelope.delivered);
        let checked = validate(&msg.payload, &envelope, &self.config.limits())
            .and_then(|job| route(routes, job, &msg.payload));
        match checked {
            Ok((job, routed)) => {
                Some(self.hold(job, routed, &msg.payload, envelope, acker, permit))
            }
            Err((id, error)) => {
                self.refuse(&acker, &envelope, id, error).await;
                None
            }
        }
    }

    /// Answers a job that can never run with `error`.
    async fn refuse(
        &self,
        acker: &JobAck,
        envelope: &Envelope,
        id: Option<String>,
        error: JobError,
    ) {
        let target = ErrorTarget {
            id: id.as_deref(),
            model: &envelope.subject_model,
            attempts: envelope.delivered,
            published_ms: envelope.published_ms,
            meta: Default::default(),
        };
        telemetry::failed(self.priority, &envelope.subject_model, error.code);
        self.answer.fail(acker, target, error).await;
    }

    /// The held job for a valid `job`, decoded from `payload`, with the version it was
    /// routed to (if any).
    fn hold(
        &self,
        job: Job<'_>,
        routed: Routed<'_>,
        payload: &Bytes,
        envelope: Envelope,
        acker: JobAck,
        permit: OwnedSemaphorePermit,
    ) -> HeldJob {
        let Envelope {
            delivered,
            published_ms,
            header_id,
            subject_model,
            traceparent,
            tracestate,
            received,
        } = envelope;
        // The envelope's copies of the id and the model, when they are the job's (they
        // nearly always are): one allocation and copy fewer each per job.
        let id = match header_id {
            Some(h) if h == *job.id => h,
            _ => job.id.to_string(),
        };
        let model = if subject_model == *job.model {
            subject_model
        } else {
            job.model.to_string()
        };
        let deadline_ms = match job.deadline_ms {
            // The producer's clock: allow for it running behind ours.
            Some(d) => d.saturating_add(self.config.clock_skew_tolerance_ms),
            // JetStream's timestamp: the server's clock, relative to publish.
            None => published_ms + self.config.default_deadline(self.priority).as_millis() as u64,
        };
        let version = match routed {
            Some((target, _)) => {
                telemetry::routed(&target.counter);
                Some(target.version.as_str())
            }
            None => job.version.as_deref(),
        };
        HeldJob::new(Held {
            route: Route {
                model,
                version: version.map(str::to_string),
            },
            routed: routed.map(|(_, slot)| slot),
            priority: self.priority,
            span: telemetry::job_span(
                &job.id,
                &job.model,
                version,
                self.priority,
                delivered,
                traceparent.as_deref(),
                tracestate.as_deref(),
                published_ms,
            ),
            deadline_ms,
            published_ms,
            attempt: delivered,
            // Known after the group's Redis round trip (`admit`), if it takes one.
            failures: 0,
            looked_up: false,
            traceparent,
            tracestate,
            meta: job.meta.clone().unwrap_or_default(),
            since: received,
            id,
            payload: payload.clone(),
            acker,
            _permit: permit,
        })
    }
}

/// The version a job was routed to, and where it goes in the job's payload.
type Routed<'r> = Option<(&'r Target, VersionSlot)>;

/// The version `job` runs on by `routes` (none: as it names), and where that version goes
/// in its payload; or the `unknown_model` answer, with the id to answer.
fn route<'j, 'r>(
    routes: &'r Routes,
    job: Job<'j>,
    payload: &[u8],
) -> Result<(Job<'j>, Routed<'r>), (Option<String>, JobError)> {
    let refuse = |job: &Job<'_>, e| (Some(job.id.to_string()), e);
    let target = match routes.route(&job) {
        Ok(target) => target,
        Err(e) => return Err(refuse(&job, e)),
    };
    let Some(target) = target else {
        return Ok((job, None));
    };
    match VersionSlot::find(payload) {
        Ok(slot) => Ok((job, Some((target, slot)))),
        Err(e) => {
            let e = JobError::bad_payload(format!("cannot route the job: {e}"));
            Err(refuse(&job, e))
        }
    }
}

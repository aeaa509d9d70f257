//! One bundle in flight: a run request to one worker, in-progress acks while it runs, then
//! acks for the jobs whose results are stored, and the rest back to the scheduler.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::RequestErrorKind;
use futures::future::join_all;
use jetinfer_schemas::names::worker_run_subject;
use jetinfer_schemas::worker::{RunJob, RunOutcome, RunReply, RunRequest};
use jetinfer_schemas::SCHEMA_VERSION;
use tokio::sync::mpsc;
use tracing::Span;

use crate::answer::Answerer;
use crate::config::Config;
use crate::conflicts::{self, FoundBy};
use crate::events::Command;
use crate::job::HeldJob;
use crate::stored::{Checked, StoredCheck};
use crate::telemetry;
use crate::workers::Placement;

pub(crate) struct Bundle {
    pub place: Placement,
    pub jobs: Vec<HeldJob>,
    /// How many of `jobs` are suspects (the worker's suspect slot is taken while they run).
    pub suspects: u32,
    pub config: Arc<Config>,
    pub answer: Answerer,
    /// The check that the results the worker reports stored are in Redis.
    pub stored: StoredCheck,
    pub scheduler: mpsc::Sender<Command>,
}

/// Pause before jobs a worker handed back are scheduled again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How a run request ended.
enum Ended {
    Replied(RunReply),
    /// The worker died (heartbeats stopped or no responder): run the jobs elsewhere.
    WorkerGone,
    /// No reply in time, or a reply we cannot read: run the jobs again.
    Failed(String),
}

impl Bundle {
    pub async fn run(self) {
        let sent = self.jobs.len() as u32;
        // One dispatch span per job, open until the request ends; the worker continues
        // each job's trace from it.
        let (_dispatch_spans, request) = self.request();
        let ended = self.call(request).await;
        let Bundle {
            place,
            jobs,
            suspects,
            answer,
            stored,
            scheduler,
            config,
        } = self;
        telemetry::bundle_ended(&place.worker, sent as usize);
        // The worker's slots for this bundle are free once it has replied or is gone: the
        // scheduler may fill them while the results are checked and the jobs acked. A
        // worker that handed jobs back (full, or draining) gets its slots back only after
        // `RETRY_BACKOFF`, so it is not sent more at once.
        let freed = Freed {
            worker: &place.worker,
            sent,
            suspects,
            worker_failed: matches!(ended, Ended::WorkerGone),
        };
        let handed_back =
            matches!(&ended, Ended::Replied(r) if r.outcomes.contains(&RunOutcome::Retry));
        if !handed_back {
            freed.tell(&scheduler).await;
        }
        let retry = match ended {
            Ended::Replied(reply) => settle(&answer, &stored, &config, jobs, reply).await,
            Ended::WorkerGone => {
                telemetry::redispatched("worker_gone", jobs.len());
                tracing::warn!(worker = %place.worker, jobs = sent, "worker gone with jobs in flight; dispatching them again");
                count_failure(&answer, jobs).await
            }
            Ended::Failed(why) => {
                telemetry::redispatched("failed", jobs.len());
                tracing::warn!(worker = %place.worker, jobs = sent, why, "bundle failed; dispatching its jobs again");
                count_failure(&answer, jobs).await
            }
        };
        if handed_back {
            freed.tell(&scheduler).await;
        }
        if retry.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(Command::Enqueue(retry))) =
            scheduler.send(Command::Enqueue(retry)).await
        {
            // The scheduler has stopped (shutdown): hand the jobs back to JetStream.
            join_all(retry.iter().map(|j| j.acker.ack_with(AckKind::Nak(None)))).await;
        }
    }

    /// The run request, and each job's dispatch span.
    fn request(&self) -> (Vec<Span>, RunRequest) {
        // One clock read for the bundle: each job's time left is counted from it.
        let now_ms = jetinfer_schemas::now_ms();
        let (spans, jobs) = self
            .jobs
            .iter()
            .map(|j| {
                let producer = telemetry::TraceHeaders {
                    traceparent: j.traceparent.as_deref().map(Into::into),
                    tracestate: j.tracestate.as_deref().map(Into::into),
                };
                let (span, trace) = telemetry::dispatch(
                    &j.span,
                    j.priority,
                    &j.route,
                    j.since,
                    j.published_ms,
                    j.attempt,
                    producer,
                    &self.place.worker,
                );
                let job = RunJob {
                    traceparent: trace.traceparent.map(|v| v.into_owned()),
                    tracestate: trace.tracestate.map(|v| v.into_owned()),
                    ..j.to_run_job(now_ms)
                };
                (span, job)
            })
            .unzip();
        let request = RunRequest {
            v: SCHEMA_VERSION,
            jobs,
        };
        (spans, request)
    }

    /// Sends the request and waits for its end, sending in-progress acks meanwhile.
    async fn call(&self, request: RunRequest) -> Ended {
        // The payloads, and room for each job's other fields.
        let size = request
            .jobs
            .iter()
            .map(|j| j.payload.len() + 160)
            .sum::<usize>()
            + 16;
        let call = self.answer.nats.send_request(
            worker_run_subject(&self.place.worker),
            async_nats::Request::new()
                .payload(request.encode_sized(size).into())
                .timeout(Some(self.place.timeout)),
        );
        tokio::pin!(call);
        let every = self.config.progress_every();
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let n = self.jobs.len();
        loop {
            tokio::select! {
                biased;
                _ = self.place.gone.cancelled() => return Ended::WorkerGone,
                reply = &mut call => return match reply {
                    Ok(msg) => match rmp_serde::from_slice::<RunReply>(&msg.payload) {
                        Ok(r) if r.outcomes.len() == n => Ended::Replied(r),
                        Ok(r) => Ended::Failed(format!("reply has {} outcomes for {n} jobs", r.outcomes.len())),
                        Err(e) => Ended::Failed(format!("unreadable reply: {e}")),
                    },
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => Ended::WorkerGone,
                    Err(e) => Ended::Failed(e.to_string()),
                },
                _ = progress.tick() => {
                    join_all(self.jobs.iter().map(|j| j.acker.ack_with(AckKind::Progress))).await;
                }
            }
        }
    }
}

/// A bundle's slots on its worker, free again.
struct Freed<'a> {
    worker: &'a str,
    sent: u32,
    suspects: u32,
    worker_failed: bool,
}

impl Freed<'_> {
    async fn tell(&self, scheduler: &mpsc::Sender<Command>) {
        let cmd = Command::Returned {
            worker: self.worker.to_string(),
            sent: self.sent,
            suspects: self.suspects,
            worker_failed: self.worker_failed,
        };
        // A stopped scheduler no longer counts slots.
        let _ = scheduler.send(cmd).await;
    }
}

/// Acks the jobs whose results the worker stored, settles those it found answered already
/// (`conflicts`); returns those to run again (handed back by the worker, or lost: those
/// count a failure).
async fn settle(
    answer: &Answerer,
    check: &StoredCheck,
    config: &Config,
    jobs: Vec<HeldJob>,
    reply: RunReply,
) -> Vec<HeldJob> {
    let mut stored = Vec::new();
    let mut retry = Vec::new();
    let mut lost = Vec::new();
    let mut existing = Vec::new();
    for (job, outcome) in jobs.into_iter().zip(reply.outcomes) {
        match outcome {
            RunOutcome::Stored => stored.push(job),
            RunOutcome::Retry => retry.push(job),
            RunOutcome::Failed => lost.push(job),
            RunOutcome::Existing => existing.push(job),
        }
    }
    if !existing.is_empty() {
        // Rare: a resubmission after the duplicate window, or a reused id. Each stored
        // result is read and compared with its job, which also checks that it exists.
        let (store, nats) = (&answer.store, &answer.nats);
        let unfound =
            conflicts::settle_answered(existing, FoundBy::Worker, store, nats, config.limits())
                .await;
        retry.extend(unfound);
    }
    let Checked {
        stored,
        missing,
        unchecked,
    } = check.check(stored).await;
    if !missing.is_empty() {
        telemetry::unverified_stored(missing.len());
        for job in &missing {
            tracing::warn!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), "worker said stored but no result exists; running the job again");
        }
    }
    // Redis did not answer (the check task said so once): nothing is acked; the jobs run
    // again and find their results.
    retry.extend(missing);
    retry.extend(unchecked);
    // Only now, with every result in Redis, are the messages acked. One after the other:
    // an ack only queues a publish on the client's channel, so awaiting them together
    // (`join_all`, a `FuturesUnordered` above 30 jobs) bought nothing, and its bookkeeping
    // was ~1 % of the dispatcher's CPU (docs/benchmarks.md, "Future sizes and held jobs").
    for job in &stored {
        let res = job.acker.ack().await;
        telemetry::completed(job.priority, &job.route, job.published_ms);
        if let Err(e) = res {
            tracing::warn!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), error = %e, "ack failed; the redelivery will find the stored result");
        }
    }
    if !retry.is_empty() {
        // The worker was full or could not store: give it a moment rather than bouncing
        // the jobs straight back.
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    retry.extend(count_failure(answer, lost).await);
    retry
}

/// Each job whose run was lost counts one failure towards `poison`, in Redis so the count
/// survives this dispatcher; if Redis is down the count is kept here for now.
async fn count_failure(answer: &Answerer, mut jobs: Vec<HeldJob>) -> Vec<HeldJob> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    match answer.store.add_failures(&ids).await {
        Ok(counts) => {
            for (j, n) in jobs.iter_mut().zip(counts) {
                j.failures = n;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record failures in the result store; counting locally");
            for j in &mut jobs {
                j.failures += 1;
            }
        }
    }
    jobs
}

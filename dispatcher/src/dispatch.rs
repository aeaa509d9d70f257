//! One bundle in flight: a run request to one worker, in-progress acks while it runs, then
//! acks for the jobs whose results are stored, and the rest back to the scheduler.

use std::sync::Arc;

use async_nats::jetstream::AckKind;
use async_nats::RequestErrorKind;
use futures::future::join_all;
use jetinfer_schemas::names::worker_run_subject;
use jetinfer_schemas::worker::{RunOutcome, RunReply, RunRequest};
use jetinfer_schemas::{encode, SCHEMA_VERSION};
use tokio::sync::mpsc;

use crate::answer::Answerer;
use crate::config::Config;
use crate::job::HeldJob;
use crate::scheduler::Command;
use crate::workers::Placement;

pub(crate) struct Bundle {
    pub place: Placement,
    pub jobs: Vec<HeldJob>,
    /// How many of `jobs` are suspects (the worker's suspect slot is taken while they run).
    pub suspects: u32,
    pub config: Arc<Config>,
    pub answer: Answerer,
    pub scheduler: mpsc::Sender<Command>,
}

/// Room left in a run request for its own framing (the NATS server's max_payload counts it).
pub(crate) const BUNDLE_ENVELOPE_BYTES: usize = 1024;
/// What a job adds to a run request besides its payload: id, traceparent, deadline, meta,
/// MessagePack framing (a generous estimate; meta is usually empty).
pub(crate) const JOB_ENVELOPE_BYTES: usize = 512;

/// Splits `items` into consecutive runs whose sizes add up to at most `budget`; an item
/// larger than the budget travels alone (JetStream accepted it, so it fits a message).
pub(crate) fn split_by_size<T>(
    items: Vec<T>,
    size: impl Fn(&T) -> usize,
    budget: usize,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let n = size(&item);
        match out.last_mut() {
            Some(last) if used + n <= budget => {
                last.push(item);
                used += n;
            }
            _ => {
                out.push(vec![item]);
                used = n;
            }
        }
    }
    out
}

/// Pause before jobs a worker handed back are scheduled again.
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

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
        let Bundle {
            place,
            jobs,
            suspects,
            config,
            answer,
            scheduler,
        } = self;
        let nats = &answer.nats;
        let sent = jobs.len() as u32;
        // One dispatch span per job; the worker continues each job's trace from it.
        let (_dispatch_spans, traceparents): (Vec<_>, Vec<_>) = jobs
            .iter()
            .map(|j| crate::telemetry::dispatch(j, &place.worker))
            .unzip();
        let request = RunRequest {
            v: SCHEMA_VERSION,
            jobs: jobs
                .iter()
                .zip(traceparents)
                .map(|(j, traceparent)| jetinfer_schemas::worker::RunJob {
                    traceparent,
                    ..j.to_run_job()
                })
                .collect(),
        };
        let call = nats.send_request(
            worker_run_subject(&place.worker),
            async_nats::Request::new()
                .payload(encode(&request).into())
                .timeout(Some(place.timeout)),
        );
        tokio::pin!(call);
        let every = config.progress_every();
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let ended = loop {
            tokio::select! {
                biased;
                _ = place.gone.cancelled() => break Ended::WorkerGone,
                reply = &mut call => break match reply {
                    Ok(msg) => match rmp_serde::from_slice::<RunReply>(&msg.payload) {
                        Ok(r) if r.outcomes.len() == jobs.len() => Ended::Replied(r),
                        Ok(r) => Ended::Failed(format!("reply has {} outcomes for {} jobs", r.outcomes.len(), jobs.len())),
                        Err(e) => Ended::Failed(format!("unreadable reply: {e}")),
                    },
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => Ended::WorkerGone,
                    Err(e) => Ended::Failed(e.to_string()),
                },
                _ = progress.tick() => {
                    join_all(jobs.iter().map(|j| j.acker.ack_with(AckKind::Progress))).await;
                }
            }
        };

        let (retry, worker_failed) = match ended {
            Ended::Replied(reply) => {
                let mut stored = Vec::new();
                let mut retry = Vec::new();
                let mut lost = Vec::new();
                for (job, outcome) in jobs.into_iter().zip(reply.outcomes) {
                    match outcome {
                        RunOutcome::Stored => stored.push(job),
                        RunOutcome::Retry => retry.push(job),
                        RunOutcome::Failed => lost.push(job),
                    }
                }
                // Only now, with every result in Redis, are the messages acked.
                for (res, job) in join_all(stored.iter().map(|j| j.acker.ack()))
                    .await
                    .into_iter()
                    .zip(&stored)
                {
                    crate::telemetry::completed(job);
                    if let Err(e) = res {
                        tracing::warn!(parent: &*job.span, id = %job.id, error = %e, "ack failed; the redelivery will find the stored result");
                    }
                }
                if !retry.is_empty() {
                    // The worker was full or could not store: give it a moment rather
                    // than bouncing the jobs straight back.
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                retry.extend(count_failure(&answer, lost).await);
                (retry, false)
            }
            Ended::WorkerGone => {
                crate::telemetry::redispatched("worker_gone", jobs.len());
                tracing::warn!(worker = %place.worker, jobs = sent, "worker gone with jobs in flight; dispatching them again");
                (count_failure(&answer, jobs).await, true)
            }
            Ended::Failed(why) => {
                crate::telemetry::redispatched("failed", jobs.len());
                tracing::warn!(worker = %place.worker, jobs = sent, why, "bundle failed; dispatching its jobs again");
                (count_failure(&answer, jobs).await, false)
            }
        };
        crate::telemetry::bundle_ended(&place.worker, sent as usize);
        let returned = Command::Returned {
            worker: place.worker,
            sent,
            suspects,
            retry,
            worker_failed,
        };
        if let Err(mpsc::error::SendError(cmd)) = scheduler.send(returned).await {
            // The scheduler has stopped (shutdown): hand the jobs back to JetStream.
            if let Command::Returned { retry, .. } = cmd {
                join_all(retry.iter().map(|j| j.acker.ack_with(AckKind::Nak(None)))).await;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::split_by_size;

    #[test]
    fn bundles_fit_the_budget_and_keep_order() {
        let sizes = vec![400, 400, 400, 100, 900, 2000, 50];
        let parts = split_by_size(sizes, |n| *n, 1000);
        assert_eq!(
            parts,
            vec![
                vec![400, 400],
                vec![400, 100],
                vec![900],
                vec![2000],
                vec![50]
            ]
        );
    }

    #[test]
    fn small_jobs_share_one_bundle() {
        let parts = split_by_size(vec![10; 64], |n| *n, 1 << 20);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), 64);
        assert!(split_by_size(Vec::<usize>::new(), |n| *n, 10).is_empty());
    }
}

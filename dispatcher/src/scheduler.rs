//! The scheduler actor: owns the ready queues and the worker registry, and turns them into
//! bundles of jobs for workers.
//!
//! Every event (a job from intake, a heartbeat, a bundle coming back, a tick) ends with
//! [`Scheduler::schedule`]: the most urgent route (priority with aging) is placed on the
//! worker serving it with the most free slots, taking as many of its jobs as fit one
//! batch, until nothing more fits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{now_ms, ErrorCode, JobError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::Answerer;
use crate::config::Config;
use crate::dispatch::Bundle;
use crate::job::HeldJob;
use crate::queue::ReadyQueues;
use crate::workers::Workers;

/// How often the scheduler looks for dead workers, expired jobs and unknown models.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Most events handled in one go before a scheduling pass (so a flood of events cannot
/// postpone scheduling indefinitely).
const DRAIN_AT_MOST: usize = 256;

pub(crate) enum Command {
    /// Triaged jobs from intake (what one pull had delivered).
    Enqueue(Vec<HeldJob>),
    Heartbeat(Heartbeat),
    /// A bundle came back: its slots are free again; `retry` jobs go back to the queues.
    Returned {
        worker: String,
        sent: u32,
        /// Of `sent`, how many were suspects (lost a run before).
        suspects: u32,
        retry: Vec<HeldJob>,
        worker_failed: bool,
    },
}

pub(crate) struct Scheduler {
    pub queues: ReadyQueues<HeldJob>,
    pub workers: Workers,
    pub config: Arc<Config>,
    pub answer: Answerer,
    /// Handed to each bundle so it can report back.
    pub tx: mpsc::Sender<Command>,
    pub tasks: TaskTracker,
    pub started: Instant,
    pub store_health: tokio::sync::watch::Receiver<bool>,
    /// The most job bytes one run request may carry (the NATS server's max_payload, less
    /// the request's envelope).
    pub max_bundle_bytes: usize,
}

impl Scheduler {
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut progress = tokio::time::interval(self.config.progress_every());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(cmd) = rx.recv() => {
                    self.handle(cmd);
                    // Take in what else has arrived before placing work, so that bundles
                    // are formed from everything queued, not one event at a time.
                    for _ in 0..DRAIN_AT_MOST {
                        let Ok(cmd) = rx.try_recv() else { break };
                        self.handle(cmd);
                    }
                }
                _ = sweep.tick() => self.sweep(),
                _ = progress.tick() => {
                    // Queued jobs must not reach AckWait while they wait for a worker.
                    join_all(self.queues.iter().map(|j| j.acker.ack_with(AckKind::Progress))).await;
                }
            }
            self.schedule();
        }
        // Hand queued jobs back to JetStream at once, for another dispatcher (or our restart).
        let left = self.queues.remove_where(|_, _, _| true);
        tracing::info!(
            jobs = left.len(),
            "scheduler stopping; returning queued jobs to JetStream"
        );
        join_all(
            left.iter()
                .map(|(_, _, j)| j.acker.ack_with(AckKind::Nak(None))),
        )
        .await;
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Enqueue(jobs) => {
                for job in jobs {
                    self.admit(job);
                }
            }
            Command::Heartbeat(hb) => self.workers.heartbeat(hb, Instant::now()),
            Command::Returned {
                worker,
                sent,
                suspects,
                retry,
                worker_failed,
            } => {
                self.workers.release(&worker, sent, suspects);
                if worker_failed {
                    self.workers.remove(&worker);
                }
                for job in retry {
                    self.admit(job);
                }
            }
        }
    }

    /// Queues a job unless it is out of attempts or past its deadline.
    fn admit(&mut self, job: HeldJob) {
        if job.failures >= self.config.max_attempts {
            let msg = format!(
                "{} runs of this job were lost (workers died, timed out or could not run it)",
                job.failures
            );
            let answer = self.answer.clone();
            self.tasks.spawn(async move {
                answer
                    .dead_letter(job, JobError::new(ErrorCode::Poison, msg))
                    .await
            });
            return;
        }
        if job.is_expired(now_ms()) {
            let error = expired(&job);
            return self.fail(job, error);
        }
        let (p, route, since) = (job.priority, job.route.clone(), job.since);
        self.queues.push(p, route, job, since);
    }

    fn fail(&self, job: HeldJob, error: JobError) {
        let answer = self.answer.clone();
        crate::telemetry::failed(job.priority, &job.route.model, error.code);
        let span = job.span.clone();
        self.tasks.spawn(tracing::Instrument::instrument(
            async move { answer.fail_held(job, error).await },
            span,
        ));
    }

    /// Dead workers, expired jobs, and jobs for models nobody serves.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.workers.expire(now);
        let now_unix = now_ms();
        let memory = Duration::from_millis(self.config.unknown_model_after_ms);
        let grace_over = now.duration_since(self.started) > memory;
        let workers = &self.workers;
        let removed = self.queues.remove_where(|_, route, job| {
            job.is_expired(now_unix) || (grace_over && workers.surely_unknown(route, now, memory))
        });
        for (_, route, job) in removed {
            let error = if job.is_expired(now_unix) {
                expired(&job)
            } else {
                let what = match &route.version {
                    Some(v) => format!("{} version {v}", route.model),
                    None => route.model.clone(),
                };
                JobError::new(
                    ErrorCode::UnknownModel,
                    format!("no worker serves model {what}"),
                )
            };
            self.fail(job, error);
        }
    }

    /// Places as much queued work on workers as their free slots allow.
    fn schedule(&mut self) {
        // With the result store down nothing could be stored: keep jobs queued (their
        // in-progress acks continue) until it returns.
        if self.queues.len() == 0 || !*self.store_health.borrow() {
            return;
        }
        let now = Instant::now();
        for route in self.queues.routes_by_urgency(now) {
            while let Some(place) = self.workers.place(&route) {
                let taken = self.queues.take(&route, place.capacity, now);
                if taken.is_empty() {
                    break;
                }
                let now_unix = now_ms();
                let mut jobs = Vec::with_capacity(taken.len());
                let mut parked = Vec::new();
                for (priority, job, since) in taken {
                    if job.is_expired(now_unix) {
                        let error = expired(&job);
                        self.fail(job, error);
                    } else if job.failures > 0 {
                        // A job that lost a run may be what kills workers: it runs alone,
                        // on a worker holding no other such job, so it cannot take
                        // innocent jobs down with it again and again.
                        match self.workers.place_suspect(&route) {
                            Some(alone) => self.dispatch(alone, vec![job], 1),
                            None => parked.push((priority, job, since)),
                        }
                    } else {
                        jobs.push(job);
                    }
                }
                let only_parked = jobs.is_empty() && !parked.is_empty();
                for (priority, job, since) in parked {
                    self.queues.push(priority, route.clone(), job, since);
                }
                if !jobs.is_empty() {
                    self.dispatch(place, jobs, 0);
                }
                if only_parked {
                    break;
                }
            }
        }
    }

    /// Sends `jobs` to the placed worker: one run request, or several where together they
    /// would not fit one NATS message (150 KB images reach the 1 MiB default in 7 jobs).
    fn dispatch(&mut self, place: crate::workers::Placement, jobs: Vec<HeldJob>, suspects: u32) {
        let size = |j: &HeldJob| j.payload.len() + crate::dispatch::JOB_ENVELOPE_BYTES;
        for jobs in crate::dispatch::split_by_size(jobs, size, self.max_bundle_bytes) {
            self.workers
                .reserve(&place.worker, jobs.len() as u32, suspects);
            let bundle = Bundle {
                place: place.clone(),
                jobs,
                suspects,
                config: self.config.clone(),
                answer: self.answer.clone(),
                scheduler: self.tx.clone(),
            };
            self.tasks.spawn(bundle.run());
        }
    }
}

fn expired(job: &HeldJob) -> JobError {
    let late = now_ms().saturating_sub(job.deadline_ms);
    JobError::new(
        ErrorCode::Expired,
        format!("deadline passed {late} ms before the job could reach a GPU"),
    )
}

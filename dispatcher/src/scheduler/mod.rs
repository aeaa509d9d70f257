//! The scheduler actor: owns the ready queues and the worker registry, and turns them into
//! bundles of jobs for workers.
//!
//! Every event (a job from intake, a heartbeat, a bundle coming back, a tick) ends with
//! [`Scheduler::schedule`]: the most urgent route (priority with aging) is placed on the
//! worker serving it with the most free slots, taking as many of its jobs as fit one
//! batch, until nothing more fits.
//!
//! The decisions are made here; carrying them out (answering a job, running a bundle) goes
//! through the [`Effects`] trait, so unit tests check placement without servers. The
//! scheduler also counts the queues' pushes and pops, and publishes the registry's view of
//! the live workers for the health endpoint.

use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::{now_ms, ErrorCode, JobError, Priority};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::Command;
use crate::job::HeldJob;
use crate::queue::ReadyQueues;
use crate::sizing::{split_by_size, JOB_ENVELOPE_BYTES};
use crate::telemetry;
use crate::workers::{Placement, Workers, WorkersView};
use jetinfer_schemas::Route;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

/// How often the scheduler looks for dead workers, expired jobs and unknown models.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Most events handled in one go before a scheduling pass (so a flood of events cannot
/// postpone scheduling indefinitely).
const DRAIN_AT_MOST: usize = 256;

/// What the scheduler's decisions do outside it. The dispatcher runs them on tasks of
/// its own (`effects.rs`); unit tests record them.
pub(crate) trait Effects {
    /// Answers `job` with `error` (expired, unknown model).
    fn fail(&self, job: HeldJob, error: JobError);
    /// Copies a poison job to the dead-letter stream, then answers it with `error`.
    fn dead_letter(&self, job: HeldJob, error: JobError);
    /// Sends `jobs` to the placed worker in one run request; `suspects` of them lost a
    /// run before.
    fn dispatch(&self, place: Placement, jobs: Vec<HeldJob>, suspects: u32);
}

/// The settings scheduling decisions follow.
pub(crate) struct Rules {
    /// `--max-attempts`: a job that lost this many runs is poison.
    pub max_attempts: u32,
    /// `--unknown-model-after-ms`: how long a model may go unannounced before its jobs
    /// get `unknown_model` (and how long after start nothing is declared unknown).
    pub unknown_model_after: Duration,
    /// The most job bytes one run request may carry (the NATS server's max_payload, less
    /// the request's envelope).
    pub max_bundle_bytes: usize,
    /// How often queued jobs get in-progress acks.
    pub progress_every: Duration,
    /// When this dispatcher started.
    pub started: Instant,
}

pub(crate) struct Scheduler<E> {
    queues: ReadyQueues<HeldJob>,
    workers: Workers,
    rules: Rules,
    effects: E,
    store_health: watch::Receiver<bool>,
    /// Where the registry's live workers are published (the health endpoint reads them).
    workers_view: watch::Sender<WorkersView>,
}

impl<E: Effects> Scheduler<E> {
    pub fn new(
        config: &Config,
        max_bundle_bytes: usize,
        effects: E,
        store_health: watch::Receiver<bool>,
        workers_view: watch::Sender<WorkersView>,
    ) -> Self {
        Scheduler {
            queues: ReadyQueues::new(Duration::from_millis(config.aging_ms)),
            workers: Workers::new(
                Duration::from_millis(config.heartbeat_timeout_ms),
                Duration::from_millis(config.dispatch_timeout_ms),
            ),
            rules: Rules {
                max_attempts: config.max_attempts,
                unknown_model_after: Duration::from_millis(config.unknown_model_after_ms),
                max_bundle_bytes,
                progress_every: config.progress_every(),
                started: Instant::now(),
            },
            effects,
            store_health,
            workers_view,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut progress = tokio::time::interval(self.rules.progress_every);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(cmd) = rx.recv() => {
                    self.handle(cmd, Instant::now(), now_ms());
                    // Take in what else has arrived before placing work, so that bundles
                    // are formed from everything queued, not one event at a time.
                    for _ in 0..DRAIN_AT_MOST {
                        let Ok(cmd) = rx.try_recv() else { break };
                        self.handle(cmd, Instant::now(), now_ms());
                    }
                }
                _ = sweep.tick() => self.sweep(Instant::now(), now_ms()),
                _ = progress.tick() => {
                    // Queued jobs must not reach AckWait while they wait for a worker.
                    join_all(self.queues.iter().map(|j| j.acker.ack_with(AckKind::Progress))).await;
                }
            }
            self.publish_workers();
            self.schedule(Instant::now(), now_ms());
        }
        self.stop().await;
    }

    /// Hands queued jobs back to JetStream at once, for another dispatcher (or our restart).
    async fn stop(mut self) {
        let left = self.queues.remove_where(|_, _, _| true);
        for (p, _, _) in &left {
            telemetry::queue_pop(*p);
        }
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

    /// Takes in one event at `now` (`now_unix` in Unix ms, for deadlines).
    fn handle(&mut self, cmd: Command, now: Instant, now_unix: u64) {
        match cmd {
            Command::Enqueue(jobs) => {
                for job in jobs {
                    self.admit(job, now_unix);
                }
            }
            Command::Heartbeat(hb) => {
                telemetry::worker_seen(&hb.worker, hb.free_slots);
                self.workers.heartbeat(hb, now);
            }
            Command::Returned {
                worker,
                sent,
                suspects,
                worker_failed,
            } => {
                self.workers.release(&worker, sent, suspects);
                if worker_failed {
                    self.workers.remove(&worker);
                }
            }
        }
    }

    /// Publishes the live workers and their count, when they changed.
    fn publish_workers(&mut self) {
        if let Some(view) = self.workers.view() {
            telemetry::workers_live(view.len());
            self.workers_view.send_replace(view);
        }
    }

    /// Queues a job unless it is out of attempts or past its deadline.
    fn admit(&mut self, job: HeldJob, now_unix: u64) {
        if job.failures >= self.rules.max_attempts {
            let msg = format!(
                "{} runs of this job were lost (workers died, timed out or could not run it)",
                job.failures
            );
            self.effects
                .dead_letter(job, JobError::new(ErrorCode::Poison, msg));
            return;
        }
        if job.is_expired(now_unix) {
            let error = expired(&job, now_unix);
            return self.fail(job, error);
        }
        let (p, route, since) = (job.priority, job.route.clone(), job.since);
        self.push(p, route, job, since);
    }

    fn push(&mut self, priority: Priority, route: Route, job: HeldJob, since: Instant) {
        self.queues.push(priority, route, job, since);
        telemetry::queue_push(priority);
    }

    fn fail(&self, job: HeldJob, error: JobError) {
        telemetry::failed(job.priority, &job.route.model, error.code);
        self.effects.fail(job, error);
    }

    /// Dead workers, expired jobs, and jobs for models nobody serves.
    fn sweep(&mut self, now: Instant, now_unix: u64) {
        self.workers.expire(now);
        let memory = self.rules.unknown_model_after;
        let grace_over = now.saturating_duration_since(self.rules.started) > memory;
        let workers = &self.workers;
        let removed = self.queues.remove_where(|_, route, job| {
            job.is_expired(now_unix) || (grace_over && workers.surely_unknown(route, now, memory))
        });
        for (p, route, job) in removed {
            telemetry::queue_pop(p);
            let error = if job.is_expired(now_unix) {
                expired(&job, now_unix)
            } else {
                JobError::new(
                    ErrorCode::UnknownModel,
                    format!("no worker serves model {route}"),
                )
            };
            self.fail(job, error);
        }
    }

    /// Places as much queued work on workers as their free slots allow.
    fn schedule(&mut self, now: Instant, now_unix: u64) {
        // With the result store down nothing could be stored: keep jobs queued (their
        // in-progress acks continue) until it returns.
        if self.queues.len() == 0 || !*self.store_health.borrow() {
            return;
        }
        for route in self.queues.routes_by_urgency(now) {
            self.place_route(&route, now, now_unix);
        }
    }

    /// Places `route`'s jobs on the workers serving it until they or their slots run out.
    fn place_route(&mut self, route: &Route, now: Instant, now_unix: u64) {
        while let Some(place) = self.workers.place(route) {
            let taken = self.queues.take(route, place.capacity, now);
            if taken.is_empty() {
                break;
            }
            let mut jobs = Vec::with_capacity(taken.len());
            let mut parked = Vec::new();
            for (priority, job, since) in taken {
                telemetry::queue_pop(priority);
                if job.is_expired(now_unix) {
                    let error = expired(&job, now_unix);
                    self.fail(job, error);
                } else if job.failures > 0 {
                    // A job that lost a run may be what kills workers: it runs alone, on
                    // a worker holding no other such job, so it cannot take innocent jobs
                    // down with it again and again.
                    match self.workers.place_suspect(route) {
                        Some(alone) => self.dispatch(alone, vec![job], 1),
                        None => parked.push((priority, job, since)),
                    }
                } else {
                    jobs.push(job);
                }
            }
            let only_parked = jobs.is_empty() && !parked.is_empty();
            for (priority, job, since) in parked {
                self.push(priority, route.clone(), job, since);
            }
            if !jobs.is_empty() {
                self.dispatch(place, jobs, 0);
            }
            if only_parked {
                break;
            }
        }
    }

    /// Sends `jobs` to the placed worker: one run request, or several where together they
    /// would not fit one NATS message.
    fn dispatch(&mut self, place: Placement, jobs: Vec<HeldJob>, suspects: u32) {
        let size = |j: &HeldJob| j.payload.len() + JOB_ENVELOPE_BYTES;
        for jobs in split_by_size(jobs, size, self.rules.max_bundle_bytes) {
            self.workers
                .reserve(&place.worker, jobs.len() as u32, suspects);
            self.effects.dispatch(place.clone(), jobs, suspects);
        }
    }
}

fn expired(job: &HeldJob, now_unix: u64) -> JobError {
    let late = now_unix.saturating_sub(job.deadline_ms);
    JobError::new(
        ErrorCode::Expired,
        format!("deadline passed {late} ms before the job could reach a GPU"),
    )
}

//! The Redis lookup between triage and the scheduler: which triaged jobs already have a
//! result (a redelivery after a lost ack, a resubmission after JetStream's duplicate window,
//! or another job under a reused id: see `conflicts`), and how many runs of the others were
//! lost so far.
//!
//! One lookup at a time per intake, and every group triaged while it was under way goes
//! into the next one ([`crate::coalesce`]). On a many-core host the intake reads messages
//! about as fast as they arrive, so its groups are small, and a lookup of its own per group
//! would cost a Redis socket write and read each (docs/benchmarks.md, "Shared Redis round
//! trips").

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::Limits;
use jetinfer_store::ResultStore;
use tokio::sync::{mpsc, watch};

use super::conflicts;
use crate::coalesce::next_pass;
use crate::events::Command;
use crate::health;
use crate::job::HeldJob;

/// Hands triaged groups to the intake's lookup task.
pub(super) struct Admits {
    tx: mpsc::Sender<Vec<HeldJob>>,
}

/// What the lookups need besides the jobs.
pub(super) struct Admitter {
    pub store: ResultStore,
    pub nats: async_nats::Client,
    pub limits: Limits,
    pub scheduler: mpsc::Sender<Command>,
    pub health: watch::Receiver<bool>,
}

impl Admits {
    /// Starts the lookup task; it ends once this handle is dropped and its queue is done.
    /// `in_flight_cap` is the priority's: every queued group holds at least one of its
    /// permits, so a queue of that many groups never makes the intake wait.
    pub fn start(admitter: Admitter, in_flight_cap: usize) -> Admits {
        let (tx, rx) = mpsc::channel(in_flight_cap.max(1));
        tokio::spawn(admitter.run(rx));
        Admits { tx }
    }

    /// Queues a triaged group for the next lookup.
    pub async fn send(&self, jobs: Vec<HeldJob>) {
        if self.tx.send(jobs).await.is_err() {
            // Only when the task panicked: dropping the jobs leaves their messages un-acked,
            // and JetStream delivers them again.
            tracing::error!("intake lookup task gone; the jobs will be redelivered");
        }
    }
}

impl Admitter {
    async fn run(self, mut rx: mpsc::Receiver<Vec<HeldJob>>) {
        while let Some(groups) = next_pass(&mut rx).await {
            let mut jobs: Vec<HeldJob> = groups.into_iter().flatten().collect();
            let states = self.job_states(&mut jobs, &mut rx).await;
            self.admit(jobs, states).await;
        }
    }

    /// Settles the jobs that already have a result (they must not run again) and queues
    /// the rest with their count of lost runs.
    async fn admit(&self, jobs: Vec<HeldJob>, states: Vec<(bool, u32)>) {
        let mut queued = Vec::with_capacity(jobs.len());
        let mut answered = Vec::new();
        for (mut job, (has_result, failures)) in jobs.into_iter().zip(states) {
            if has_result {
                answered.push(job);
                continue;
            }
            job.failures = failures;
            queued.push(job);
        }
        if !answered.is_empty() {
            // Rare (redeliveries, resubmissions), and it reads the results: on its own task,
            // so the next lookup does not wait for it.
            let (store, nats, limits) = (self.store.clone(), self.nats.clone(), self.limits);
            tokio::spawn(async move {
                conflicts::settle_answered(answered, &store, &nats, limits).await
            });
        }
        if !queued.is_empty() && self.scheduler.send(Command::Enqueue(queued)).await.is_err() {
            tracing::debug!("scheduler stopped; messages will be redelivered");
        }
    }

    /// Per job, whether it has a result and its lost runs so far, in one round trip. Lost
    /// runs are counted only while a dispatcher holds a message (`count_failure`), so a
    /// first delivery has none and a group of first deliveries needs no `MGET` of counts.
    /// Redis down: wait for it, holding the messages (a nak would spend their redelivery
    /// budget), and with them the groups queued meanwhile, so that every held message gets
    /// its in-progress acks.
    async fn job_states(
        &self,
        jobs: &mut Vec<HeldJob>,
        rx: &mut mpsc::Receiver<Vec<HeldJob>>,
    ) -> Vec<(bool, u32)> {
        let mut health = self.health.clone();
        loop {
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            let states = if jobs.iter().all(|j| j.attempt <= 1) {
                self.store
                    .exists_many(&ids)
                    .await
                    .map(|found| found.into_iter().map(|e| (e, 0)).collect())
            } else {
                self.store.job_states(&ids).await
            };
            let e = match states {
                Ok(states) => return states,
                Err(e) => e,
            };
            tracing::warn!(jobs = ids.len(), error = %e, "result store unreachable; holding the jobs until it returns");
            while let Ok(more) = rx.try_recv() {
                jobs.extend(more);
            }
            join_all(jobs.iter().map(|j| j.acker.ack_with(AckKind::Progress))).await;
            tokio::select! {
                _ = health::until_reachable(&mut health) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

//! The Redis lookup between triage and the scheduler, for the jobs that need one: which
//! redelivered jobs already have a result (a redelivery after a lost ack: see
//! `crate::conflicts`), and how many runs of the others were lost so far.
//!
//! A first delivery skips it while Redis is reachable and goes straight to the scheduler:
//! it has lost no run (those are counted only while a dispatcher holds the message), and a
//! result already stored under its id (a resubmission after JetStream's duplicate window,
//! or a reused id) is found by the worker's `SET NX` instead, reported
//! `RunOutcome::Existing` and settled then. That costs a run in the rare case and saves a
//! Redis round trip per triaged group in the common one (docs/benchmarks.md, "First
//! deliveries skip the lookup").
//!
//! One lookup at a time per intake, and every group queued while it was under way goes
//! into the next one ([`crate::coalesce`]).

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::Limits;
use jetinfer_store::ResultStore;
use tokio::sync::{mpsc, watch};

use crate::coalesce::next_pass;
use crate::conflicts::{self, FoundBy};
use crate::events::Command;
use crate::health;
use crate::job::HeldJob;

/// Hands triaged groups to the scheduler, through the intake's lookup task where needed.
pub(super) struct Admits {
    tx: mpsc::Sender<Vec<HeldJob>>,
    scheduler: mpsc::Sender<Command>,
    health: watch::Receiver<bool>,
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
        let (scheduler, health) = (admitter.scheduler.clone(), admitter.health.clone());
        tokio::spawn(admitter.run(rx));
        Admits {
            tx,
            scheduler,
            health,
        }
    }

    /// Hands a triaged group on: first deliveries straight to the scheduler while Redis is
    /// reachable, the rest to the next lookup. While Redis is down every job goes to the
    /// lookup, which holds it (with in-progress acks) until Redis is back, rather than
    /// letting it run and fail to store.
    pub async fn send(&self, jobs: Vec<HeldJob>) {
        let (direct, lookup): (Vec<HeldJob>, Vec<HeldJob>) = if *self.health.borrow() {
            jobs.into_iter().partition(|j| j.attempt <= 1)
        } else {
            (Vec::new(), jobs)
        };
        if !direct.is_empty() && self.scheduler.send(Command::Enqueue(direct)).await.is_err() {
            tracing::debug!("scheduler stopped; messages will be redelivered");
        }
        if lookup.is_empty() {
            return;
        }
        if self.tx.send(lookup).await.is_err() {
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
            job.looked_up = true;
            queued.push(job);
        }
        if !answered.is_empty() {
            // Rare (redeliveries, resubmissions), and it reads the results: on its own task,
            // so the next lookup does not wait for it.
            let (store, nats, limits) = (self.store.clone(), self.nats.clone(), self.limits);
            tokio::spawn(async move {
                let found_by = FoundBy::Lookup;
                conflicts::settle_answered(answered, found_by, &store, &nats, limits).await
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

//! A scheduler for unit tests: explicit times, recorded effects and acks, default flags.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use crate::job::{Held, JobAck};
use crate::workers::test_heartbeat;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

pub(super) use super::*;
pub(super) use crate::job::Ack;

/// Records the ack kinds a job's message was given.
#[derive(Clone, Default)]
pub(super) struct Acks(pub Arc<Mutex<Vec<String>>>);

impl Ack for Acks {
    fn ack(&self) -> BoxFuture<'_, Result<(), async_nats::Error>> {
        self.0.lock().unwrap().push("Ack".into());
        Box::pin(async { Ok(()) })
    }

    fn ack_with(&self, kind: AckKind) -> BoxFuture<'_, Result<(), async_nats::Error>> {
        self.0.lock().unwrap().push(format!("{kind:?}"));
        Box::pin(async { Ok(()) })
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Did {
    Fail(String, ErrorCode),
    DeadLetter(String),
    /// Worker, job ids, suspects.
    Dispatch(String, Vec<String>, u32),
}

#[derive(Default)]
pub(super) struct Recorder(pub RefCell<Vec<Did>>);

impl Effects for Recorder {
    fn fail(&self, job: HeldJob, error: JobError) {
        self.0
            .borrow_mut()
            .push(Did::Fail(job.id.clone(), error.code));
    }

    fn dead_letter(&self, job: HeldJob, _error: JobError) {
        self.0.borrow_mut().push(Did::DeadLetter(job.id.clone()));
    }

    fn dispatch(&self, place: Placement, jobs: Vec<HeldJob>, suspects: u32) {
        let ids = jobs.iter().map(|j| j.id.clone()).collect();
        self.0
            .borrow_mut()
            .push(Did::Dispatch(place.worker, ids, suspects));
    }
}

/// A wall clock far from zero, so deadlines can lie on either side of it.
pub(super) const NOW_MS: u64 = 1_000_000;

pub(super) struct Test {
    pub s: Scheduler<Recorder>,
    pub t0: Instant,
    /// Store health, as the health probe would publish it.
    pub health: watch::Sender<bool>,
    pub view: watch::Receiver<WorkersView>,
}

/// A scheduler with the default flags (10 s aging, 3 s heartbeat timeout, 5 attempts,
/// 10 s until a model is unknown), started at `t0`.
pub(super) fn scheduler(max_bundle_bytes: usize) -> Test {
    let config = <Config as clap::Parser>::try_parse_from(["d"]).unwrap();
    let (health, store_health) = watch::channel(true);
    let (view_tx, view) = watch::channel(Vec::new());
    let s = Scheduler::new(
        &config,
        max_bundle_bytes,
        Recorder::default(),
        store_health,
        view_tx,
    );
    let t0 = s.rules.started;
    Test {
        s,
        t0,
        health,
        view,
    }
}

impl Test {
    pub fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    pub fn heartbeat(&mut self, worker: &str, model: &str, slots: u32, at_ms: u64) {
        let hb = test_heartbeat(worker, model, "1", slots);
        self.s
            .handle(Command::Heartbeat(hb), self.at(at_ms), NOW_MS + at_ms);
    }

    pub fn enqueue(&mut self, jobs: Vec<HeldJob>, at_ms: u64) {
        self.s
            .handle(Command::Enqueue(jobs), self.at(at_ms), NOW_MS + at_ms);
    }

    /// A bundle of `sent` jobs came back from `worker`.
    pub fn returned(
        &mut self,
        worker: &str,
        sent: u32,
        suspects: u32,
        worker_failed: bool,
        at_ms: u64,
    ) {
        let cmd = Command::Returned {
            worker: worker.into(),
            sent,
            suspects,
            worker_failed,
        };
        self.s.handle(cmd, self.at(at_ms), NOW_MS + at_ms);
    }

    pub fn schedule(&mut self, at_ms: u64) -> Vec<Did> {
        self.s.schedule(self.at(at_ms), NOW_MS + at_ms);
        self.s.effects.0.take()
    }

    pub fn sweep(&mut self, at_ms: u64) -> Vec<Did> {
        self.s.sweep(self.at(at_ms), NOW_MS + at_ms);
        self.s.effects.0.take()
    }

    /// A job for `model` at `priority`, queued `at_ms` after start, due in a minute.
    pub fn job(&self, id: &str, model: &str, priority: Priority, at_ms: u64) -> HeldJob {
        self.job_with(id, model, priority, at_ms, Acks::default())
    }

    pub fn job_with(
        &self,
        id: &str,
        model: &str,
        priority: Priority,
        at_ms: u64,
        acks: Acks,
    ) -> HeldJob {
        HeldJob::new(Held {
            id: id.into(),
            route: Route {
                model: model.into(),
                version: None,
            },
            priority,
            deadline_ms: NOW_MS + at_ms + 60_000,
            published_ms: NOW_MS + at_ms,
            attempt: 1,
            failures: 0,
            looked_up: false,
            payload: Bytes::from_static(b"payload"),
            traceparent: None,
            tracestate: None,
            span: telemetry::job_span(id, model, None, priority, 1, None, None, NOW_MS),
            routed: None,
            meta: Default::default(),
            since: self.at(at_ms),
            acker: JobAck::Other(Box::new(acks)),
            _permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
        })
    }
}

pub(super) fn dispatch(worker: &str, ids: &[&str], suspects: u32) -> Did {
    Did::Dispatch(
        worker.into(),
        ids.iter().map(|s| s.to_string()).collect(),
        suspects,
    )
}

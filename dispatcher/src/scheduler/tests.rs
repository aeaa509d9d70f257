//! The scheduler's decisions, driven with explicit times and recorded effects: no NATS,
//! no Redis, no tasks.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use jetinfer_schemas::worker::{Heartbeat, ModelInfo};
use tokio::sync::Semaphore;

use super::*;
use crate::job::Ack;

/// Records the ack kinds a job's message was given.
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<Vec<String>>>);

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
enum Did {
    Fail(String, ErrorCode),
    DeadLetter(String),
    /// Worker, job ids, suspects.
    Dispatch(String, Vec<String>, u32),
}

#[derive(Default)]
struct Recorder(RefCell<Vec<Did>>);

impl Effects for Recorder {
    fn fail(&self, job: HeldJob, error: JobError) {
        self.0.borrow_mut().push(Did::Fail(job.id, error.code));
    }

    fn dead_letter(&self, job: HeldJob, _error: JobError) {
        self.0.borrow_mut().push(Did::DeadLetter(job.id));
    }

    fn dispatch(&self, place: Placement, jobs: Vec<HeldJob>, suspects: u32) {
        let ids = jobs.into_iter().map(|j| j.id).collect();
        self.0
            .borrow_mut()
            .push(Did::Dispatch(place.worker, ids, suspects));
    }
}

/// A wall clock far from zero, so deadlines can lie on either side of it.
const NOW_MS: u64 = 1_000_000;

struct Test {
    s: Scheduler<Recorder>,
    t0: Instant,
    /// Store health, as the health probe would publish it.
    health: watch::Sender<bool>,
    view: watch::Receiver<WorkersView>,
}

/// A scheduler with the default flags (10 s aging, 3 s heartbeat timeout, 5 attempts,
/// 10 s until a model is unknown), started at `t0`.
fn scheduler(max_bundle_bytes: usize) -> Test {
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
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn heartbeat(&mut self, worker: &str, model: &str, slots: u32, at_ms: u64) {
        let hb = Heartbeat {
            v: 1,
            worker: worker.into(),
            models: vec![ModelInfo {
                name: model.into(),
                version: "1".into(),
                max_batch_size: 8,
                inputs: vec![],
                batch_ms: None,
            }],
            slots,
            free_slots: slots,
            devices: vec![],
            gpu_memory_bytes: None,
            accepting: true,
            sent_at_ms: 0,
        };
        self.s
            .handle(Command::Heartbeat(hb), self.at(at_ms), NOW_MS + at_ms);
    }

    fn enqueue(&mut self, jobs: Vec<HeldJob>, at_ms: u64) {
        self.s
            .handle(Command::Enqueue(jobs), self.at(at_ms), NOW_MS + at_ms);
    }

    /// A bundle of `sent` jobs came back from `worker`.
    fn returned(
        &mut self,
        worker: &str,
        sent: u32,
        suspects: u32,
        retry: Vec<HeldJob>,
        worker_failed: bool,
        at_ms: u64,
    ) {
        let cmd = Command::Returned {
            worker: worker.into(),
            sent,
            suspects,
            retry,
            worker_failed,
        };
        self.s.handle(cmd, self.at(at_ms), NOW_MS + at_ms);
    }

    fn schedule(&mut self, at_ms: u64) -> Vec<Did> {
        self.s.schedule(self.at(at_ms), NOW_MS + at_ms);
        self.s.effects.0.take()
    }

    fn sweep(&mut self, at_ms: u64) -> Vec<Did> {
        self.s.sweep(self.at(at_ms), NOW_MS + at_ms);
        self.s.effects.0.take()
    }

    /// A job for `model` at `priority`, queued `at_ms` after start, due in a minute.
    fn job(&self, id: &str, model: &str, priority: Priority, at_ms: u64) -> HeldJob {
        self.job_with(id, model, priority, at_ms, Acks::default())
    }

    fn job_with(
        &self,
        id: &str,
        model: &str,
        priority: Priority,
        at_ms: u64,
        acks: Acks,
    ) -> HeldJob {
        HeldJob {
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
            payload: Bytes::from_static(b"payload"),
            traceparent: None,
            span: telemetry::job_span(id, model, priority, 1, None, NOW_MS),
            meta: Default::default(),
            since: self.at(at_ms),
            acker: Box::new(acks),
            _permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
        }
    }
}

fn dispatch(worker: &str, ids: &[&str], suspects: u32) -> Did {
    Did::Dispatch(
        worker.into(),
        ids.iter().map(|s| s.to_string()).collect(),
        suspects,
    )
}

#[test]
fn the_most_urgent_route_goes_first_to_the_freest_worker() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("small", "m", 2, 0);
    t.heartbeat("big", "m", 16, 0);
    t.heartbeat("other", "n", 4, 0);
    let jobs = vec![
        t.job("m-p2", "m", Priority::P2, 0),
        t.job("m-p1", "m", Priority::P1, 0),
        t.job("n-p0", "n", Priority::P0, 0),
    ];
    t.enqueue(jobs, 0);
    assert_eq!(
        t.schedule(0),
        vec![
            dispatch("other", &["n-p0"], 0),
            dispatch("big", &["m-p1", "m-p2"], 0),
        ]
    );
}

#[test]
fn a_bundle_holds_at_most_one_batch_and_free_slots_bound_the_rest() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("w", "m", 12, 0);
    let jobs = (0..14)
        .map(|i| t.job(&format!("j{i:02}"), "m", Priority::P1, i))
        .collect();
    t.enqueue(jobs, 20);
    let did = t.schedule(20);
    let sizes: Vec<usize> = did
        .iter()
        .map(|d| match d {
            Did::Dispatch(_, ids, _) => ids.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, [8, 4], "batch size 8, then the 4 slots left");
    // The bundle comes back: its slots are free again and the last 2 jobs go out.
    t.returned("w", 8, 0, vec![], false, 30);
    assert_eq!(t.schedule(30), vec![dispatch("w", &["j12", "j13"], 0)]);
}

#[test]
fn aging_lets_a_waiting_p2_job_ahead_of_fresh_p0_work() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("w", "m", 1, 0);
    let old = t.job("old-p2", "m", Priority::P2, 0);
    t.enqueue(vec![old], 0);
    // Aging is 10 s: after 25 s the P2 job scores 2 - 2.5, ahead of a fresh P0 (0).
    let fresh = t.job("new-p0", "m", Priority::P0, 25_000);
    t.enqueue(vec![fresh], 25_000);
    t.heartbeat("w", "m", 1, 25_000);
    assert_eq!(t.schedule(25_000), vec![dispatch("w", &["old-p2"], 0)]);
}

#[test]
fn expired_jobs_are_answered_expired_and_never_dispatched() {
    let mut t = scheduler(1 << 20);
    let mut late = t.job("late", "m", Priority::P0, 0);
    late.deadline_ms = NOW_MS - 1;
    t.enqueue(vec![late], 0);
    assert_eq!(
        t.s.effects.0.take(),
        vec![Did::Fail("late".into(), ErrorCode::Expired)]
    );

    let mut soon = t.job("soon", "m", Priority::P0, 0);
    soon.deadline_ms = NOW_MS + 500;
    t.enqueue(vec![soon], 0);
    assert!(t.sweep(100).is_empty(), "still in time");
    assert_eq!(
        t.sweep(600),
        vec![Did::Fail("soon".into(), ErrorCode::Expired)]
    );
    assert_eq!(t.s.queues.len(), 0);
}

#[test]
fn a_model_nobody_serves_is_unknown_only_after_the_grace_period() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("w", "m", 4, 0);
    let jobs = vec![t.job("x1", "x", Priority::P1, 0)];
    t.enqueue(jobs, 0);
    assert!(t.sweep(5_000).is_empty(), "workers may still be starting");
    t.heartbeat("w", "m", 4, 10_500);
    assert_eq!(
        t.sweep(10_500),
        vec![Did::Fail("x1".into(), ErrorCode::UnknownModel)]
    );
}

#[test]
fn nothing_is_unknown_while_no_worker_is_heard() {
    let mut t = scheduler(1 << 20);
    let jobs = vec![t.job("x1", "x", Priority::P1, 0)];
    t.enqueue(jobs, 0);
    assert!(t.sweep(20_000).is_empty());
    assert_eq!(t.s.queues.len(), 1);
}

#[test]
fn a_job_out_of_attempts_is_poison() {
    let mut t = scheduler(1 << 20);
    let mut poison = t.job("poison", "m", Priority::P0, 0);
    poison.failures = 5;
    let mut suspect = t.job("suspect", "m", Priority::P0, 0);
    suspect.failures = 4;
    t.enqueue(vec![poison, suspect], 0);
    assert_eq!(t.s.effects.0.take(), vec![Did::DeadLetter("poison".into())]);
    assert_eq!(t.s.queues.len(), 1);
}

#[test]
fn suspects_run_alone_one_per_worker() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("w", "m", 16, 0);
    let mut jobs = vec![t.job("fine", "m", Priority::P1, 0)];
    for id in ["s1", "s2"] {
        let mut j = t.job(id, "m", Priority::P0, 0);
        j.failures = 1;
        jobs.push(j);
    }
    t.enqueue(jobs, 0);
    assert_eq!(
        t.schedule(0),
        vec![dispatch("w", &["s1"], 1), dispatch("w", &["fine"], 0)]
    );
    assert_eq!(
        t.s.queues.len(),
        1,
        "s2 waits for the worker's suspect slot"
    );
    t.returned("w", 1, 1, vec![], false, 10);
    assert_eq!(t.schedule(10), vec![dispatch("w", &["s2"], 1)]);
}

#[test]
fn run_requests_are_cut_to_the_bundle_budget() {
    // Each job is 7 payload bytes plus the envelope estimate: two fit the budget.
    let mut t = scheduler(2 * (7 + JOB_ENVELOPE_BYTES));
    t.heartbeat("w", "m", 8, 0);
    let jobs = (0..5)
        .map(|i| t.job(&format!("j{i}"), "m", Priority::P1, i))
        .collect();
    t.enqueue(jobs, 10);
    assert_eq!(
        t.schedule(10),
        vec![
            dispatch("w", &["j0", "j1"], 0),
            dispatch("w", &["j2", "j3"], 0),
            dispatch("w", &["j4"], 0),
        ]
    );
}

#[test]
fn nothing_is_dispatched_while_the_store_is_down() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("w", "m", 8, 0);
    let jobs = vec![t.job("j", "m", Priority::P0, 0)];
    t.enqueue(jobs, 0);
    t.health.send_replace(false);
    assert!(t.schedule(0).is_empty());
    t.health.send_replace(true);
    assert_eq!(t.schedule(0), vec![dispatch("w", &["j"], 0)]);
}

#[test]
fn a_failed_worker_gets_no_more_work_and_its_jobs_are_requeued() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("a", "m", 8, 0);
    let jobs = vec![t.job("j", "m", Priority::P0, 0)];
    t.enqueue(jobs, 0);
    assert_eq!(t.schedule(0), vec![dispatch("a", &["j"], 0)]);
    let mut back = t.job("j", "m", Priority::P0, 0);
    back.failures = 1;
    t.returned("a", 1, 0, vec![back], true, 10);
    assert!(t.schedule(10).is_empty(), "no worker left");
    t.heartbeat("b", "m", 8, 20);
    assert_eq!(t.schedule(20), vec![dispatch("b", &["j"], 1)]);
}

#[test]
fn the_live_workers_are_published_when_they_change() {
    let mut t = scheduler(1 << 20);
    t.heartbeat("b", "m", 8, 0);
    t.heartbeat("a", "n", 4, 0);
    t.s.publish_workers();
    let ids: Vec<String> = t.view.borrow().iter().map(|h| h.worker.clone()).collect();
    assert_eq!(ids, ["a", "b"]);
    t.sweep(3_500);
    t.s.publish_workers();
    assert!(t.view.borrow().is_empty(), "both went silent");
}

#[tokio::test]
async fn stopping_hands_queued_jobs_back_to_jetstream() {
    let mut t = scheduler(1 << 20);
    let acks = Acks::default();
    let jobs = vec![
        t.job_with("a", "m", Priority::P0, 0, acks.clone()),
        t.job_with("b", "n", Priority::P2, 0, acks.clone()),
    ];
    t.enqueue(jobs, 0);
    t.s.stop().await;
    assert_eq!(*acks.0.lock().unwrap(), ["Nak(None)", "Nak(None)"]);
}

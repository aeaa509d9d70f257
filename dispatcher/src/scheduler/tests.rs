//! The scheduler's decisions, driven with explicit times and recorded effects: no NATS,
//! no Redis, no tasks.

use super::harness::*;

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
    t.returned("w", 8, 0, false, 30);
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
    t.returned("w", 1, 1, false, 10);
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
    t.returned("a", 1, 0, true, 10);
    t.enqueue(vec![back], 10);
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

#[tokio::test(start_paused = true)]
async fn queued_jobs_get_progress_acks_until_shutdown_hands_them_back() {
    let t = scheduler(1 << 20);
    let acks = Acks::default();
    let mut job = t.job_with("j", "m", Priority::P0, 0, acks.clone());
    // `run` reads the wall clock for deadlines.
    job.deadline_ms = u64::MAX;
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let driver = async {
        tx.send(Command::Enqueue(vec![job])).await.unwrap();
        // In-progress acks every 10 s (a third of the default 30 s AckWait).
        tokio::time::sleep(Duration::from_secs(25)).await;
        shutdown.cancel();
    };
    tokio::join!(t.s.run(rx, shutdown.clone()), driver);
    assert_eq!(
        *acks.0.lock().unwrap(),
        ["Progress", "Progress", "Nak(None)"]
    );
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

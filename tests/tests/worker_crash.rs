//! A worker killed with SIGKILL mid-run: every job still completes, on the other worker.
//!
//! The worker is frozen, then handed jobs, then killed, and the jobs skip the result cache:
//! killed at an idle moment, or holding only cache hits (answered the moment they arrive),
//! it would die holding nothing and the test would prove nothing (CI once saw exactly that).

use std::collections::HashSet;
use std::time::Duration;

use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples_with, run_id, stack, Cache};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_worker_complete_on_the_other() {
    let mut stack = stack(2, &["--heartbeat-timeout-ms", "2000"]).await;
    let client = stack.client().await.unwrap();
    let (run, run2) = (run_id("crash"), run_id("crash-frozen"));
    let mut jobs =
        publish_samples_with(&client, "seqpool", 600, Priority::P1, &run, Cache::Off).await;
    jobs.extend(publish_samples_with(&client, "mlp", 900, Priority::P2, &run, Cache::Off).await);
    // Both workers serve these and answer every bundle, so the dispatcher counts no job in
    // flight on worker-0 when it is frozen. (Frozen mid-run, it once held nothing the
    // dispatcher still had to place: its slots looked full, likely with jobs already stored
    // whose replies were unsent, and the new jobs all went to worker-1.)
    let first = assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    for w in ["worker-0", "worker-1"] {
        assert!(first.values().any(|r| r.worker == w), "{w} served no job");
    }
    // Results are stored before the bundles' replies: give the dispatcher time to read them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Freeze worker-0 and publish more jobs: it still looks alive (2 s heartbeat
    // timeout), so the dispatcher fills its free slots with jobs it will never run.
    let frozen_at = jetinfer_schemas::now_ms();
    stack.worker("worker-0").expect("worker-0").pause();
    jobs.extend(
        publish_samples_with(&client, "seqpool", 300, Priority::P1, &run2, Cache::Off).await,
    );
    jobs.extend(publish_samples_with(&client, "mlp", 300, Priority::P2, &run2, Cache::Off).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.worker("worker-0").expect("worker-0").kill();

    let results = assert_all_correct(&client, &jobs, Duration::from_secs(120)).await;
    // Jobs worker-0 held when it died ran again (attempt 2) on worker-1.
    let rerun: Vec<_> = results.values().filter(|r| r.attempts > 1).collect();
    let on = |w: &str| results.values().filter(|r| r.worker == w).count();
    println!(
        "{} jobs ran again after worker-0 died; worker-0 wrote {}, worker-1 {}; last result {} ms after the freeze",
        rerun.len(),
        on("worker-0"),
        on("worker-1"),
        results.values().map(|r| r.completed_at_ms).max().unwrap_or(0) as i64 - frozen_at as i64
    );
    assert!(
        !rerun.is_empty(),
        "worker-0 held no jobs when it was killed; the test proves nothing\n{}",
        stack.log_tails(60)
    );
    assert!(
        rerun.iter().all(|r| r.worker == "worker-1"),
        "a re-dispatched job ran on the dead worker"
    );
    let late: HashSet<&str> = results
        .values()
        .filter(|r| r.completed_at_ms > frozen_at + 100)
        .map(|r| r.worker.as_str())
        .collect();
    assert!(
        late.iter().all(|w| *w == "worker-1"),
        "once worker-0 was frozen only worker-1 should write results: {late:?}"
    );
}

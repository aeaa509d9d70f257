//! A worker killed with SIGKILL mid-run: every job still completes, on the other worker.
//!
//! The jobs skip the result cache, and the worker is frozen and handed more jobs before it
//! is killed: a cache hit or an idle moment would let it die holding nothing, and the test
//! would prove nothing (CI once saw exactly that).

use std::collections::HashSet;
use std::time::Duration;

use jetinfer_schemas::Priority;
use jetinfer_tests::{
    assert_all_correct, collect_results, publish_uncached_samples, run_id, stack,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_worker_complete_on_the_other() {
    let mut stack = stack(2, &["--heartbeat-timeout-ms", "2000"]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("crash");
    let mut jobs = publish_uncached_samples(&client, "seqpool", 600, Priority::P1, &run).await;
    jobs.extend(publish_uncached_samples(&client, "mlp", 900, Priority::P2, &run).await);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();

    // Kill worker-0 while the pool is busy with the jobs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = collect_results(&client, &ids, Duration::ZERO).await.len();
        if done >= 150 {
            assert!(
                done < ids.len(),
                "all jobs finished before the kill; the test proves nothing"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs are not being served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Freeze worker-0 and publish more jobs: it still looks alive (2 s heartbeat
    // timeout), so the dispatcher fills its free slots with jobs it will never run.
    let frozen_at = jetinfer_schemas::now_ms();
    stack.worker("worker-0").expect("worker-0").pause();
    jobs.extend(publish_uncached_samples(&client, "mlp", 200, Priority::P1, &run).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.worker("worker-0").expect("worker-0").kill();

    let results = assert_all_correct(&client, &jobs, Duration::from_secs(120)).await;
    // Jobs worker-0 held when it died ran again (attempt 2) on worker-1.
    let rerun: Vec<_> = results.values().filter(|r| r.attempts > 1).collect();
    println!("{} jobs ran again after worker-0 died", rerun.len());
    assert!(
        !rerun.is_empty(),
        "worker-0 held no jobs when it was killed; the test proves nothing"
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

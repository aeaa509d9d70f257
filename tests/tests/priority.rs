//! Priorities: P0 jobs published after a large P2 backlog finish before the backlog drains.

use std::time::Duration;

use jetinfer_devkit::local::wait_for_workers;
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p0_jobs_overtake_a_p2_backlog() {
    // No worker yet: the backlog builds up in JetStream and in the dispatcher's queues.
    let mut stack = stack(0, &[]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("priority");
    let backlog = publish_samples(&client, "mlp", 2000, Priority::P2, &run).await;
    let urgent = publish_samples(&client, "mlp", 50, Priority::P0, &run).await;

    stack.start_worker(Vec::<String>::new()).unwrap();
    let nats = stack.connect_nats().await.unwrap();
    wait_for_workers(&nats, 1, Duration::from_secs(60))
        .await
        .unwrap();

    let all: Vec<_> = backlog.iter().chain(&urgent).cloned().collect();
    let results = assert_all_correct(&client, &all, Duration::from_secs(120)).await;
    let last_p0 = urgent
        .iter()
        .map(|j| results[&j.id].completed_at_ms)
        .max()
        .unwrap();
    let p2_done: Vec<u64> = backlog
        .iter()
        .map(|j| results[&j.id].completed_at_ms)
        .collect();
    let p2_before_last_p0 = p2_done.iter().filter(|&&t| t < last_p0).count();
    assert!(
        p2_before_last_p0 < backlog.len() / 4,
        "{p2_before_last_p0} of {} P2 jobs finished before the last P0 job",
        backlog.len()
    );
}

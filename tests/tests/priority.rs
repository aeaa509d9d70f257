//! Priorities: P0 jobs published after a large P2 backlog finish before the backlog drains,
//! and a P2 flood that fills its stream holds back neither P0 publishes nor deliveries.

use std::time::Duration;

use jetinfer_client::ClientError;
use jetinfer_devkit::local::wait_for_workers;
use jetinfer_schemas::names::{consumer_name, jobs_stream};
use jetinfer_schemas::{Job, Priority};
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id, stack, Expected};

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

/// Each priority has its own stream: a P2 flood that fills its stream is refused at
/// publish, while P0 jobs are still accepted and delivered to the dispatcher at once. No
/// worker runs while the flood is measured, so nothing here depends on timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2_flood_cannot_hold_back_p0_publishes_or_deliveries() {
    const P2_LIMIT: i64 = 300;
    let limit = P2_LIMIT.to_string();
    let mut stack = stack(
        0,
        &[
            "--stream-max-msgs",
            &limit,
            "--unknown-model-after-ms",
            "120000",
        ],
    )
    .await;
    let client = stack.client().await.unwrap();
    let run = run_id("flood");
    let samples = golden().samples("mlp");
    let mut flood = Vec::new();
    let refusal = loop {
        let id = format!("{run}-p2-{}", flood.len());
        let job = Job::new(
            id.clone(),
            "mlp",
            samples[flood.len() % samples.len()].inputs.clone(),
        );
        match client.submit(Priority::P2, &job).await {
            Ok(_) => flood.push(id),
            Err(e) => break e,
        }
        assert!(
            flood.len() as i64 <= P2_LIMIT,
            "the P2 stream took more than its limit"
        );
    };
    assert!(
        matches!(refusal, ClientError::StreamFull { .. }),
        "a full P2 stream refuses at publish: {refusal}"
    );

    // P0 publishes go to their own stream: all accepted while P2 is full.
    let urgent = publish_samples(&client, "mlp", 50, Priority::P0, &run).await;
    let js = async_nats::jetstream::new(stack.connect_nats().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p0 = consumer_state(&js, Priority::P0).await;
        let p2 = consumer_state(&js, Priority::P2).await;
        // Delivered to the dispatcher (held, unacked: no worker yet), none left waiting.
        if p0 == (0, urgent.len() as u64) {
            assert!(
                p2.0 > 0,
                "the P2 backlog is still waiting in its stream: {p2:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "P0 jobs not delivered behind a full P2 stream: P0 (pending, held) = {p0:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With a worker, everything runs: the P0 jobs and the whole accepted flood.
    stack.start_worker(Vec::<String>::new()).unwrap();
    let flood: Vec<Expected> = flood
        .into_iter()
        .enumerate()
        .map(|(i, id)| Expected {
            id,
            priority: Priority::P2,
            expected: samples[i % samples.len()].outputs.clone(),
        })
        .collect();
    let all: Vec<_> = urgent.iter().chain(&flood).cloned().collect();
    assert_all_correct(&client, &all, Duration::from_secs(120)).await;
}

/// `(num_pending, num_ack_pending)` of a priority's consumer.
async fn consumer_state(js: &async_nats::jetstream::Context, p: Priority) -> (u64, u64) {
    let stream = js.get_stream(jobs_stream(p)).await.unwrap();
    let info = stream.consumer_info(consumer_name(p)).await.unwrap();
    (info.num_pending, info.num_ack_pending as u64)
}

//! Partition streams (`--partitions`): a priority's jobs spread over several JetStream
//! streams by job id, every one of them served; producers that know nothing of partitions
//! keep working; and lowering the count neither strands queued jobs nor breaks producers
//! that still remember the old count.

use std::time::Duration;

use async_nats::jetstream;
use jetinfer_client::ClientError;
use jetinfer_devkit::local::LocalStack;
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::partitions::{partition_for, partition_stream};
use jetinfer_schemas::{encode, Job, Priority};
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id, stack};

/// Messages ever stored in each of `p`'s first `n` partition streams (their last sequence:
/// acked jobs leave a WorkQueue stream, the sequence stays).
async fn stored_per_partition(js: &jetstream::Context, p: Priority, n: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for k in 0..n {
        let mut stream = js.get_stream(partition_stream(p, k)).await.unwrap();
        out.push(stream.info().await.unwrap().state.last_sequence);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_over_partitions_all_run_and_old_producers_still_work() {
    let stack = stack(1, &["--partitions", "3"]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("partitions");
    let mut jobs = Vec::new();
    for p in Priority::ALL {
        jobs.extend(publish_samples(&client, "mlp", 90, p, &run).await);
    }
    // A producer that knows nothing of partitions publishes on the subject of before.
    let legacy_id = format!("{run}-legacy");
    let sample = &golden().samples("mlp")[0];
    let legacy = Job::new(legacy_id.as_str(), "mlp", sample.inputs.clone());
    client
        .publish_raw(
            &job_subject(Priority::P1, "mlp"),
            &legacy_id,
            encode(&legacy).into(),
        )
        .await
        .unwrap();
    jobs.push(jetinfer_tests::Expected {
        id: legacy_id,
        priority: Priority::P1,
        expected: sample.outputs.clone(),
    });
    assert_all_correct(&client, &jobs, Duration::from_secs(90)).await;

    let js = client.jetstream();
    for p in Priority::ALL {
        let stored = stored_per_partition(js, p, 3).await;
        // The ids decide: count what each partition should have received.
        let mut want = vec![0u64; 3];
        for job in jobs.iter().filter(|j| j.priority == p) {
            let legacy = job.id.ends_with("-legacy");
            // The legacy producer's job is on partition 0's subject, whatever its id says.
            let k = if legacy { 0 } else { partition_for(&job.id, 3) };
            want[usize::from(k)] += 1;
        }
        assert_eq!(stored, want, "{p}: jobs stored per partition");
        assert!(stored.iter().all(|&n| n > 0), "{p}: every partition used");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_partitions_keeps_every_job() {
    // The count through the environment, so that a restart may override it by flag.
    let mut stack = LocalStack::builder()
        .workers(0)
        .env("JETINFER_PARTITIONS", "3")
        // Queued jobs wait through the restarts below.
        .env("JETINFER_DEADLINE_MS", "300000,300000,300000")
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap();
    let client = stack.client().await.unwrap();
    let run = run_id("partitions-lower");
    // The client reads 3 partitions, and keeps that count.
    let first = publish_samples(&client, "mlp", 30, Priority::P1, &format!("{run}-a")).await;
    let js = client.jetstream().clone();
    let stored = stored_per_partition(&js, Priority::P1, 3).await;
    assert!(stored[2] > 0, "partition 2 holds jobs: {stored:?}");

    // Jobs still queued in partition 2 (no worker yet): a dispatcher with fewer partitions
    // would strand them, so it refuses to start, naming the stream.
    let refused = stack.start_dispatcher(["--partitions", "2"]).unwrap();
    let status = refused
        .wait_exit(Duration::from_secs(20))
        .expect("it exits");
    assert!(!status.success());
    // The whole log: with RUST_BACKTRACE set (CI), a backtrace follows the error message.
    let log = refused.log();
    assert!(
        log.contains("JETINFER_P1_2") && log.contains("--partitions 3"),
        "{log}"
    );

    // Drain them with the old count, then lower it: the empty partition is removed.
    stack.start_dispatcher(Vec::<String>::new()).unwrap();
    stack.start_worker(Vec::<String>::new()).unwrap();
    assert_all_correct(&client, &first, Duration::from_secs(60)).await;
    stack
        .dispatcher()
        .unwrap()
        .stop_within(Duration::from_secs(10));
    stack.start_dispatcher(["--partitions", "2"]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while js
        .get_stream(partition_stream(Priority::P1, 2))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition 2 removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The client still believes in 3: a job of partition 2 finds no stream, the client
    // reads the count again and publishes to the job's partition of 2.
    let id = (0..)
        .map(|i| format!("{run}-b-{i}"))
        .find(|id| partition_for(id, 3) == 2)
        .unwrap();
    let sample = &golden().samples("mlp")[0];
    let job = Job::new(id.as_str(), "mlp", sample.inputs.clone());
    client.submit(Priority::P1, &job).await.unwrap();
    let second = [jetinfer_tests::Expected {
        id: id.clone(),
        priority: Priority::P1,
        expected: sample.outputs.clone(),
    }];
    assert_all_correct(&client, &second, Duration::from_secs(60)).await;

    // A client told a fixed count larger than the streams gets a typed error, not a hang.
    let fixed = client.clone().with_partitions(3);
    let job = Job::new(id.as_str(), "mlp", sample.inputs.clone());
    match fixed.submit(Priority::P1, &job).await {
        Err(ClientError::NoStream { subject }) => assert!(subject.ends_with(".2"), "{subject}"),
        other => panic!("expected NoStream, got {:?}", other.map(|s| s.id)),
    }
}

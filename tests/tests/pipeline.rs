//! The whole path, for real: JetStream → dispatcher → two workers (libtorch) → Redis.

use std::collections::HashSet;
use std::time::Duration;

use jetinfer_devkit::local::{LocalStack, NatsServer};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_jobs_over_three_priorities_and_two_workers_all_correct() {
    // Two intake tasks per priority share each consumer and in-flight cap (the default is
    // one; every other test runs with it).
    let mut stack = stack(2, &["--intake-tasks", "2"]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("pipeline");
    let mut jobs = Vec::new();
    for (model, priority, n) in [
        ("mlp", Priority::P0, 100),
        ("pair", Priority::P1, 150),
        ("seqpool", Priority::P2, 150),
        ("imgmean", Priority::P2, 100),
    ] {
        jobs.extend(publish_samples(&client, model, n, priority, &run).await);
    }
    assert_eq!(jobs.len(), 500);
    let results = assert_all_correct(&client, &jobs, Duration::from_secs(90)).await;

    let batched = results
        .values()
        .filter(|r| r.timings.batch_size > 1)
        .count();
    assert!(batched > 0, "no job ran in a batch larger than 1");
    let workers: HashSet<&str> = results.values().map(|r| r.worker.as_str()).collect();
    assert_eq!(
        workers.len(),
        2,
        "both workers should have served jobs: {workers:?}"
    );
    assert!(results
        .values()
        .all(|r| r.version == "1" && r.attempts >= 1));
    stack.check_alive("after 500 jobs").unwrap();
}

/// The Python usage example (examples/python/jetinfer_client.py, on the `jetinfer`
/// package of clients/python) publishes jobs and reads correct results, inline and with
/// every job's inputs by reference (`--inline-limit 0`); `--no-cache` so a model runs
/// every job, the second imgmean pass included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_written_from_the_wire_doc_gets_correct_results() {
    let stack = stack(1, &[]).await;
    let root = jetinfer_devkit::local::repo_root().unwrap();
    for (model, inline_limit) in [("pair", "32768"), ("imgmean", "32768"), ("imgmean", "0")] {
        let out = tokio::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("examples/python/jetinfer_client.py"))
            .args([
                "--nats-url",
                stack.nats_url(),
                "--redis-url",
                stack.redis_url(),
            ])
            .arg("--golden")
            .arg(root.join("models/out/golden.json"))
            .args(["--model", model, "--count", "20"])
            .args(["--inline-limit", inline_limit, "--no-cache"])
            .output()
            .await
            .expect("running the Python client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "python client failed for {model}:\n{text}"
        );
        assert!(text.contains("PASS"), "{text}");
    }
}

/// Bundles are cut to the NATS server's max_payload. With an 8 KiB limit, 200 jobs queued
/// before any worker exists would make 32-job bundles of about 11 KB: each one refused by
/// the server, its jobs counted as lost runs and re-sent one by one as suspects. Cut to
/// size, every job runs on its first try, in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_cut_to_the_nats_servers_max_payload() {
    // max_payload has no command-line flag: a config file sets it.
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "max_payload: 8192\n").unwrap();
    let nats =
        NatsServer::start_with_args(["-c".to_string(), conf.path().display().to_string()]).unwrap();
    let mut stack = LocalStack::builder()
        .nats_url(nats.url())
        .workers(0)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap();
    let client = stack.client().await.unwrap();
    let run = run_id("bundle-size");
    let jobs = publish_samples(&client, "imgmean", 200, Priority::P1, &run).await;
    stack.start_worker(Vec::<String>::new()).unwrap();
    let results = assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;

    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let states = client.store().job_states(&ids).await.unwrap();
    let lost: Vec<&str> = ids
        .iter()
        .zip(&states)
        .filter(|(_, (_, failures))| *failures > 0)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        lost.is_empty(),
        "{} jobs had a lost run (a bundle too large for one message?), e.g. {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(3)],
        stack.log_tails(20)
    );
    assert!(results.values().any(|r| r.timings.batch_size > 1));
}

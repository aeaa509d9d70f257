//! `linger_ms` (worker/src/gather.rs) through the whole path: jobs published apart from
//! each other meet in one batch on an idle device that lingers, a batch goes as soon as it
//! is full, and a lone job goes once the linger has passed — never held longer.
//!
//! Checked through the results' own `batch_size` and lower bounds on time, so a slow
//! machine cannot make the test flake: without the linger, the first job of each group
//! would run alone on the idle device (batch size 1).

use std::time::{Duration, Instant};

use jetinfer_schemas::{Job, Priority, Status, Tensor};
use jetinfer_tests::{collect_results, run_id, stack_serving, write_models};

const MAX_BATCH: usize = 4;
const LINGER_MS: u64 = 2_000;
/// Between publishes: well inside the linger.
const APART: Duration = Duration::from_millis(100);

fn models_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        "[[models]]\nname = \"sim\"\nversion = \"1\"\nmax_batch_size = {MAX_BATCH}\n\
         linger_ms = {LINGER_MS}\n\
         inputs = [{{ dtype = \"f32\", shape = [2] }}]\n\
         sim = {{ batch_ms = 1.0 }}\n"
    );
    write_models(dir, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_device_that_lingers_batches_jobs_published_apart() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_serving(models_file(dir.path())).await;
    let client = stack.client().await.unwrap();
    let run = run_id("linger");
    // Inputs differ per job: equal ones would be answered from the result cache.
    let publish = |id: String, x: f32| {
        let client = &client;
        async move {
            let job = Job::new(
                id.clone(),
                "sim",
                vec![Tensor::from_f32(vec![2], &[x, 2.0])],
            );
            client
                .submit(Priority::P1, &job)
                .await
                .unwrap_or_else(|e| panic!("submit {id}: {e}"));
            id
        }
    };

    // Jobs published apart meet in one batch.
    let mut full = Vec::new();
    for i in 0..MAX_BATCH {
        full.push(publish(format!("{run}-full-{i}"), i as f32).await);
        tokio::time::sleep(APART).await;
    }
    let results = collect_results(&client, &full, Duration::from_secs(60)).await;
    assert_eq!(results.len(), MAX_BATCH, "every job has a result");
    for id in &full {
        let r = &results[id];
        assert_eq!(r.status, Status::Ok, "job {id}: {:?}", r.error);
        assert_eq!(
            r.timings.batch_size as usize, MAX_BATCH,
            "job {id}: the idle device waited for the others"
        );
    }

    // Fewer than a batch: they go together once the linger has passed, not before.
    let started_short = Instant::now();
    let mut short = Vec::new();
    for i in 0..2 {
        short.push(publish(format!("{run}-short-{i}"), 10.0 + i as f32).await);
        tokio::time::sleep(APART).await;
    }
    let results = collect_results(&client, &short, Duration::from_secs(60)).await;
    assert_eq!(results.len(), 2, "every job has a result");
    for id in &short {
        let r = &results[id];
        assert_eq!(r.status, Status::Ok, "job {id}: {:?}", r.error);
        assert_eq!(r.timings.batch_size, 2, "job {id}: one batch for both");
    }
    assert!(
        started_short.elapsed() >= Duration::from_millis(LINGER_MS),
        "a batch that is not full waits out the linger"
    );
}

//! One model, several executor threads: a worker whose models file lists a model twice on
//! `cpu` (two entries) and another with `instances = 2` runs batches of each model on
//! both of its threads at once, every result correct. The threads are told apart by the
//! worker's own metrics (`jetinfer_worker_batches_total{model,version,device,instance}`);
//! that they ran at the same time shows in the forward time summed over batches, which
//! exceeds the wall-clock time the jobs took.
//!
//! Every forward is slowed by `--inject-faults slow_ms` (a sleep on the executor thread,
//! so the overlap does not depend on free CPU cores): one thread alone would need at least
//! the sum of the batches' forward times.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, http, publish_samples, run_id, write_models};

/// Added to every forward, ms.
const SLOW_MS: u64 = 300;
/// Jobs per model; at most 4 per batch, so at least 12 batches per model.
const JOBS: usize = 48;

/// A models file with `mlp` listed twice on `cpu` and `pair` once with `instances = 2`,
/// both with batches of at most 4 (many batches for the threads to share).
fn models_file(dir: &std::path::Path) -> PathBuf {
    let out = repo_root().unwrap().join("models/out");
    let entry = |name: &str, inputs: &str, extra: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\nversion = \"1\"\npath = \"{}\"\ndevice = \"cpu\"\n\
             max_batch_size = 4\nmax_queue_delay_ms = 2\ninputs = {inputs}\n{extra}\n",
            out.join(format!("{name}.pt")).display()
        )
    };
    let mlp = r#"[{ dtype = "f32", shape = [16] }]"#;
    let pair = r#"[{ dtype = "f32", shape = [8] }, { dtype = "f32", shape = [8] }]"#;
    let text =
        entry("mlp", mlp, "") + &entry("mlp", mlp, "") + &entry("pair", pair, "instances = 2");
    write_models(dir, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_two_cpu_entries_or_two_instances_runs_batches_on_both_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let slow = format!("slow_ms={SLOW_MS}");
    let mut stack = LocalStack::builder()
        .workers(1)
        .models(models_file(dir.path()))
        .worker_args([
            "--inject-faults",
            slow.as_str(),
            "--slots",
            "32",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let addr = http::metrics_addr(stack.workers()[0].log_path()).await;
    let client = stack.client().await.unwrap();
    let run = run_id("devices");

    let started = Instant::now();
    let mut jobs = publish_samples(&client, "mlp", JOBS, Priority::P1, &run).await;
    jobs.extend(publish_samples(&client, "pair", JOBS, Priority::P1, &run).await);
    let results = assert_all_correct(&client, &jobs, Duration::from_secs(120)).await;
    let wall = started.elapsed().as_secs_f64();
    assert!(results.values().all(|r| r.version == "1"));

    let text = http::get(&addr, "/metrics").await.1;
    let batches = batches_by_thread(&text);
    for model in ["mlp", "pair"] {
        for instance in ["0", "1"] {
            let n = batches
                .get(&(model.to_string(), instance.to_string()))
                .copied()
                .unwrap_or(0.0);
            assert!(
                n >= 1.0,
                "{model}: instance {instance} ran no batch: {batches:?}\n{text}"
            );
        }
    }
    let total: f64 = batches.values().sum();
    assert!(
        total >= (2 * JOBS / 4) as f64,
        "at most 4 jobs per batch: {batches:?}"
    );
    // Every batch slept SLOW_MS on its thread: one thread at a time would have needed at
    // least `total × SLOW_MS`. The worker has two threads on `cpu` (each runs both models:
    // a device's threads share its models), so the jobs took about half of that (1.4:
    // room for a slow, shared test machine).
    let serial = total * SLOW_MS as f64 / 1e3;
    eprintln!(
        "batches per (model, instance): {batches:?}; {serial:.1} s of forwards in {wall:.1} s"
    );
    assert!(
        serial > 1.4 * wall,
        "batches did not overlap: {total} batches × {SLOW_MS} ms = {serial:.1} s of forwards in {wall:.1} s"
    );
    stack.check_alive("after the jobs").unwrap();
    stack.stop();
}

/// `jetinfer_worker_batches_total` per (model, instance), all on `cpu`.
fn batches_by_thread(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("jetinfer_worker_batches_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(label("device"), "cpu", "{line}");
        assert_eq!(label("version"), "1", "{line}");
        *out.entry((label("model"), label("instance")))
            .or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    out
}

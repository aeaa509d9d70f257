//! Test harness for jetinfer's black-box tests (`tests/tests/*.rs`).
//!
//! Every test starts its own real stack through [`jetinfer_devkit::local::LocalStack`]:
//! a nats-server with JetStream on a free port, a redis-server on a private unix socket,
//! the `jetinfer-dispatcher` and `jetinfer-worker` binaries built by
//! `cargo build --workspace --bins`, all killed when the stack is dropped. The helpers here
//! publish golden samples (exported with the models by `models/export.py`, outputs computed
//! by PyTorch) and collect results from Redis, so a test compares jetinfer's outputs with
//! PyTorch's.

pub mod cli;
pub mod cluster;
pub mod http;
pub mod load;
pub mod logs;
pub mod otlp;
pub mod sentinel;
pub mod watch;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_client::Client;
use jetinfer_devkit::golden::{compare, Golden, Sample};
use jetinfer_devkit::local::{repo_root, LocalStack, RedisServer};
use jetinfer_schemas::{Job, JobResult, Priority, Tensor};

/// Tolerances for f32 models on the CPU.
pub const ATOL: f32 = 1e-4;
pub const RTOL: f32 = 1e-3;

/// The golden samples exported next to the models.
pub fn golden() -> Golden {
    let dir = repo_root().expect("repository root").join("models/out");
    Golden::load(&dir).unwrap_or_else(|e| {
        panic!(
            "golden data in {}: {e} (run scripts/setup.sh)",
            dir.display()
        )
    })
}

/// A stack with `workers` workers and a dispatcher started with `dispatcher_args`.
pub async fn stack(workers: usize, dispatcher_args: &[&str]) -> LocalStack {
    LocalStack::builder()
        .workers(workers)
        .dispatcher_args(dispatcher_args.iter().copied())
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"))
}

/// Writes `text` as `models.toml` in `dir`; returns its path.
pub fn write_models(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("models.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A stack with one worker serving the models file `models`.
pub async fn stack_serving(models: std::path::PathBuf) -> LocalStack {
    LocalStack::builder()
        .workers(1)
        .models(models)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"))
}

/// A stack with one worker, a dispatcher spreading over `partitions` partition streams,
/// and `extra` input stores besides the stack's Redis (the worker reads inputs from each).
/// Returns the extra servers (stopped when dropped) and their URLs before it, so that a
/// `let (servers, urls, stack)` drops the stack first.
pub async fn spread_stack(
    partitions: usize,
    extra: usize,
) -> (Vec<RedisServer>, Vec<String>, LocalStack) {
    let servers: Vec<RedisServer> = (0..extra).map(|_| RedisServer::start().unwrap()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let mut worker_args = Vec::new();
    for url in &urls {
        worker_args.extend(["--inputs-redis-url".to_string(), url.clone()]);
    }
    let stack = LocalStack::builder()
        .workers(1)
        .dispatcher_args(["--partitions".to_string(), partitions.to_string()])
        .worker_args(worker_args)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    (servers, urls, stack)
}

/// A unique prefix for job ids of one test run.
pub fn run_id(test: &str) -> String {
    format!("{test}-{:08x}", rand::random::<u32>())
}

/// A job this test published, with what PyTorch says it must return.
#[derive(Clone)]
pub struct Expected {
    pub id: String,
    pub priority: Priority,
    pub expected: Vec<Tensor<'static>>,
}

/// Whether published jobs may be answered from the result cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cache {
    /// The job's default: a repeated sample is answered from the cache.
    Allowed,
    /// `"cache": false`: every job runs the model. For tests that need jobs held by a
    /// worker, since a cache hit is answered the moment it arrives.
    Off,
}

/// Publishes `n` jobs of `model` (cycling through its golden samples) at `priority`,
/// up to 128 publish acks in flight; returns them in publish order.
pub async fn publish_samples(
    client: &Client,
    model: &str,
    n: usize,
    priority: Priority,
    prefix: &str,
) -> Vec<Expected> {
    publish_samples_with(client, model, n, priority, prefix, Cache::Allowed).await
}

/// [`publish_samples`], choosing whether the result cache may answer the jobs.
pub async fn publish_samples_with(
    client: &Client,
    model: &str,
    n: usize,
    priority: Priority,
    prefix: &str,
    cache: Cache,
) -> Vec<Expected> {
    let samples: Vec<Sample> = golden().samples(model);
    assert!(!samples.is_empty(), "no golden samples for {model}");
    let jobs: Vec<(Expected, Vec<Tensor<'static>>)> = (0..n)
        .map(|i| {
            let s = &samples[i % samples.len()];
            let id = format!("{prefix}-{}-{model}-{i}", priority.as_str());
            (
                Expected {
                    id,
                    priority,
                    expected: s.outputs.clone(),
                },
                s.inputs.clone(),
            )
        })
        .collect();
    futures::stream::iter(jobs)
        .map(|(exp, inputs)| async move {
            let mut job = Job::new(exp.id.clone(), model.to_string(), inputs);
            if cache == Cache::Off {
                job.cache = Some(false);
            }
            client
                .submit(priority, &job)
                .await
                .unwrap_or_else(|e| panic!("submit {}: {e}", exp.id));
            exp
        })
        .buffered(128)
        .collect()
        .await
}

/// Polls Redis until every id has a result or `timeout` passes; returns what it found.
pub async fn collect_results(
    client: &Client,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, JobResult<'static>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found = HashMap::new();
    loop {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains_key(*id))
            .cloned()
            .collect();
        for chunk in missing.chunks(500) {
            let got = client
                .store()
                .get_many(chunk)
                .await
                .expect("reading results from redis");
            for (id, r) in chunk.iter().zip(got) {
                if let Some(r) = r {
                    found.insert(id.clone(), r);
                }
            }
        }
        if found.len() == ids.len() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for every job and asserts each result is `ok` and matches PyTorch's outputs.
pub async fn assert_all_correct(
    client: &Client,
    jobs: &[Expected],
    timeout: Duration,
) -> HashMap<String, JobResult<'static>> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let results = collect_results(client, &ids, timeout).await;
    let missing: Vec<&String> = ids.iter().filter(|id| !results.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} results missing after {timeout:?}, e.g. {:?}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(5)]
    );
    for j in jobs {
        let r = &results[&j.id];
        assert_eq!(
            r.status,
            jetinfer_schemas::Status::Ok,
            "job {} failed: {:?}",
            j.id,
            r.error
        );
        compare(&j.expected, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|e| panic!("job {} output differs from PyTorch: {e}", j.id));
    }
    results
}

//! A steady load of golden `mlp` jobs for the restart and failover tests, and the checks
//! those tests make on its outcome (wrong results, jobs run twice, executions so far).
//!
//! The tests differ in what they break; what they publish and how they judge the results
//! is the same, so it lives here once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetinfer_client::Client;
use jetinfer_devkit::golden::{compare, Sample};
use jetinfer_schemas::{now_ms, Job, JobResult, Priority, Status};
use tokio::task::JoinSet;

use crate::{run_id, ATOL, RTOL};

/// One job of the load.
pub struct Published {
    pub id: String,
    /// Index of its golden sample.
    pub sample: usize,
}

/// How [`publish_load`] publishes.
pub struct Load {
    /// Prefix of the job ids (made unique with [`run_id`]).
    pub test: &'static str,
    /// Jobs per second.
    pub rate: f64,
    /// The most jobs it publishes, stopped or not.
    pub max_jobs: usize,
    /// `Some(limit)`: retry each publish (same id, so the stream's duplicate window keeps
    /// one copy) with 5 s attempts until `limit`, as a careful producer does through an
    /// election; `None`: publish once and panic on an error.
    pub retry_for: Option<Duration>,
}

/// Publishes golden `mlp` jobs at P1, `load.rate` per second, until `stop` or
/// `load.max_jobs`, each on a task of its own so a slow publish does not hold back the
/// ones after it.
pub async fn publish_load(
    client: Client,
    samples: Vec<Sample>,
    stop: Arc<AtomicBool>,
    load: Load,
) -> Vec<Published> {
    let run = run_id(load.test);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..load.max_jobs {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / load.rate)).await;
        let sample = i % samples.len();
        let mut job = Job::new(format!("{run}-{i}"), "mlp", samples[sample].inputs.clone());
        // The samples repeat: without this, cache hits would hide a job run twice.
        job.cache = Some(false);
        // These tests measure loss, not expiry.
        job.deadline_ms = Some(now_ms() + 3_600_000);
        let client = client.clone();
        let retry_for = load.retry_for;
        tasks.spawn(async move {
            match retry_for {
                Some(limit) => submit_patiently(&client, &job, limit).await,
                None => client
                    .submit(Priority::P1, &job)
                    .await
                    .map(|_| ())
                    .unwrap_or_else(|e| panic!("publishing {}: {e}", job.id)),
            }
            Published {
                id: job.id.to_string(),
                sample,
            }
        });
    }
    tasks.join_all().await
}

/// Publishes `job` at P1 until acknowledged, 5 s an attempt; panics after `limit`.
async fn submit_patiently(client: &Client, job: &Job<'_>, limit: Duration) {
    let give_up = Instant::now() + limit;
    loop {
        let attempt = client.submit(Priority::P1, job);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
            return;
        }
        assert!(Instant::now() < give_up, "{} never acknowledged", job.id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `id` has a result that is not ok or differs from `expected`'s PyTorch outputs
/// (a missing result is lost, not wrong).
pub fn is_wrong(
    results: &HashMap<String, JobResult<'static>>,
    id: &str,
    expected: &Sample,
) -> bool {
    results.get(id).is_some_and(|r| {
        r.status != Status::Ok || compare(&expected.outputs, &r.outputs, ATOL, RTOL).is_err()
    })
}

/// The ids among `ids` that ran more than once, by the worker's `--record-executions` counts.
pub fn ran_twice<'a>(executions: &HashMap<String, u64>, ids: &'a [String]) -> Vec<&'a String> {
    ids.iter()
        .filter(|id| executions.get(*id).is_some_and(|&n| n > 1))
        .collect()
}

/// Polls until the worker ran at least `n` jobs (its `--record-executions` counts).
pub async fn wait_for_executions(client: &Client, n: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done = client.store().executions().await.map_or(0, |e| e.len());
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {n} jobs ran within {timeout:?}: jobs are not being served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

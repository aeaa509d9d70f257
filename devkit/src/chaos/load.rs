//! Steady load: golden `mlp` jobs published at a fixed rate; a publish JetStream refuses
//! (server down, stream full) is retried with the same id, as a careful producer would —
//! de-duplication by `Nats-Msg-Id` makes that safe.

use std::time::Duration;

use jetinfer_schemas::{now_ms, Job, Priority};
use tokio::task::JoinSet;

use crate::golden::Sample;
use jetinfer_client::{Client, ClientError};

use super::ChaosOptions;

/// How long a producer keeps retrying one publish.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);

/// One load job.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub id: String,
    /// Index into the golden samples.
    pub sample: usize,
    /// Client clock at the first publish attempt.
    pub publish_ms: u64,
    /// JetStream acknowledged it (eventually).
    pub acked: bool,
    pub priority: Priority,
}

pub(crate) struct Load {
    task: tokio::task::JoinHandle<Vec<Published>>,
}

impl Load {
    pub fn start(client: Client, samples: &[Sample], opts: &ChaosOptions, case: u32) -> Load {
        let samples: Vec<Sample> = samples.to_vec();
        let (jobs, rate) = (opts.jobs, opts.rate);
        let run = format!("chaos{case}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut set = JoinSet::new();
            for i in 0..jobs {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let sample = i % samples.len();
                let mut job = Job::new(format!("{run}-{i}"), "mlp", samples[sample].inputs.clone());
                // Every job must really run: the samples repeat, and cache hits would hide
                // re-executions and skip the model.
                job.cache = Some(false);
                // A deadline far beyond any fault: the suite measures loss, not expiry
                // (case 16 covers deadlines).
                job.deadline_ms = Some(now_ms() + 3_600_000);
                // Every other job keeps its inputs in Redis (the claim check), so each
                // fault also meets jobs sent by reference, at every priority.
                let client = match i % 2 {
                    0 => client.clone(),
                    _ => client.clone().with_inline_limit(0),
                };
                let priority = Priority::ALL[i % 3];
                set.spawn(async move {
                    let publish_ms = now_ms();
                    let acked = publish_patiently(&client, priority, &job).await;
                    Published {
                        id: job.id.to_string(),
                        sample,
                        publish_ms,
                        acked,
                        priority,
                    }
                });
            }
            let mut out: Vec<Published> = set.join_all().await;
            out.sort_by_key(|p| p.publish_ms);
            out
        });
        Load { task }
    }

    /// Waits until every job is published (or given up on).
    pub async fn finish(self) -> Vec<Published> {
        self.task.await.unwrap_or_default()
    }
}

async fn publish_patiently(client: &Client, priority: Priority, job: &Job<'_>) -> bool {
    let give_up = tokio::time::Instant::now() + PUBLISH_PATIENCE;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.submit(priority, job)).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => tracing::debug!(id = %job.id, error = %e, "publish refused; retrying"),
            Err(_) => tracing::debug!(id = %job.id, "publish timed out; retrying"),
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a burst publish got from JetStream.
pub(crate) struct Burst {
    pub accepted: Vec<(String, u64)>,
    pub refused: usize,
    pub first_refusal: Option<String>,
}

/// Publishes `n` jobs as fast as JetStream takes them (256 in flight), once each: a
/// refusal (stream full) is counted, not retried.
pub(crate) async fn burst(
    client: &Client,
    samples: &[Sample],
    n: usize,
    priority: Priority,
    prefix: &str,
) -> Burst {
    use futures::StreamExt;
    let results: Vec<(String, u64, Result<(), ClientError>)> = futures::stream::iter(0..n)
        .map(|i| {
            let mut job = Job::new(
                format!("{prefix}-{i}"),
                "mlp",
                samples[i % samples.len()].inputs.clone(),
            );
            job.cache = Some(false);
            job.deadline_ms = Some(now_ms() + 3_600_000);
            async move {
                let at = now_ms();
                let r = client.submit(priority, &job).await.map(|_| ());
                (job.id.to_string(), at, r)
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut b = Burst {
        accepted: Vec::new(),
        refused: 0,
        first_refusal: None,
    };
    for (id, at, r) in results {
        match r {
            Ok(()) => b.accepted.push((id, at)),
            Err(e) => {
                b.refused += 1;
                b.first_refusal.get_or_insert_with(|| e.to_string());
            }
        }
    }
    b
}

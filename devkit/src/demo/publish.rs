//! Publishing the planned jobs with many acknowledgements in flight at once.

use std::time::Instant;

use crate::golden::GoldenModel;
use futures::StreamExt;
use indicatif::ProgressBar;
use jetinfer_client::Client;
use jetinfer_schemas::{now_ms, Job};

use super::plan::PlannedJob;

/// When a job was published, and whether JetStream took it.
#[derive(Debug)]
pub struct Sent {
    /// Client wall clock right before the publish (comparable with `completed_at_ms`).
    pub published_ms: u64,
    /// Monotonic clock at the same moment (for the poll latency).
    pub published_at: Instant,
    /// Why JetStream refused it, if it did.
    pub error: Option<String>,
}

/// Publishes every planned job, `in_flight` at a time, in plan order of start; returns one
/// [`Sent`] per planned job, in plan order.
pub async fn publish_all(
    client: &Client,
    plan: &[PlannedJob],
    golden: &[GoldenModel],
    cache: bool,
    in_flight: usize,
    bar: &ProgressBar,
) -> Vec<Sent> {
    let mut sent: Vec<(usize, Sent)> = futures::stream::iter(plan.iter().enumerate())
        .map(|(n, planned)| async move {
            let model = &golden[planned.model];
            let mut job = Job::new(
                planned.id.as_str(),
                model.name.as_str(),
                model.samples[planned.sample].inputs.clone(),
            );
            // The demo cycles through a few samples: without this the cache would answer
            // most jobs and the batching figures would mean little.
            job.cache = (!cache).then_some(false);
            let published_ms = now_ms();
            let published_at = Instant::now();
            let error = client
                .submit(planned.priority, &job)
                .await
                .err()
                .map(|e| e.to_string());
            (
                n,
                Sent {
                    published_ms,
                    published_at,
                    error,
                },
            )
        })
        .buffer_unordered(in_flight.max(1))
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    sent.sort_by_key(|(n, _)| *n);
    sent.into_iter().map(|(_, s)| s).collect()
}

//! The publishers: one per priority in an open loop (arrivals on a schedule), one in a
//! closed loop (a new job whenever a slot frees). Each publish runs in its own task so
//! acknowledgements overlap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetinfer_client::Client;
use jetinfer_schemas::names::JOBS_PREFIX;
use jetinfer_schemas::partitions::partition_for;

use crate::bench::bare::bare_subject;
use jetinfer_schemas::{Job, Priority, Tensor};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::shared::{Flight, Shared};
use crate::bench::load::Arrival;

/// What every publish needs.
pub(super) struct PublishCtx {
    /// One per priority.
    pub producers: [Client; 3],
    pub shared: Arc<Shared>,
    pub prefix: String,
    /// Partition streams of the bare loop.
    pub bare_partitions: u16,
    pub model: String,
    pub pool: Arc<Vec<Vec<Tensor<'static>>>>,
    pub id_prefix: String,
    pub counter: AtomicU64,
}

impl PublishCtx {
    /// Publishes one job whose intended start is `start`; failures are counted and, in a
    /// closed loop, give their slot back.
    async fn publish(&self, prio: usize, start: Instant) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", self.id_prefix);
        let sample = &self.pool[(n as usize) % self.pool.len()];
        let mut job = Job::new(
            id.as_str(),
            self.model.as_str(),
            sample.iter().map(Tensor::borrowed).collect(),
        );
        // Every job must run: the cache would answer repeated samples.
        job.cache = Some(false);
        let published_ms = self.shared.wall_t0_ms
            + start.saturating_duration_since(self.shared.t0).as_millis() as u64;
        // Insert before publishing: the notice can beat the publish acknowledgement.
        self.shared.flights.lock().unwrap().insert(
            n,
            Flight {
                prio,
                start,
                published_ms,
            },
        );
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        let priority = Priority::ALL[prio];
        let subject = if self.prefix == JOBS_PREFIX {
            // The pipeline: the job's partition stream.
            let producer = &self.producers[prio];
            producer.job_subject(priority, &self.model, &id).await
        } else {
            // The bare loop (the only other prefix): its streams, spread the same way.
            let k = partition_for(&id, self.bare_partitions);
            bare_subject(priority.as_str(), &self.model, k)
        };
        if self.producers[prio]
            .publish_job(&subject, &job)
            .await
            .is_err()
        {
            self.shared.flights.lock().unwrap().remove(&n);
            self.shared.rec.lock().unwrap().publish_errors += 1;
            self.shared.finished();
        }
    }
}

/// Open loop: publishes priority `prio` at `rate` jobs per second until `end`, with at
/// most `max_publishing` acknowledgements awaited at once.
pub(super) fn open_loop(
    ctx: Arc<PublishCtx>,
    prio: usize,
    rate: f64,
    arrival: Arrival,
    end: Instant,
    max_publishing: usize,
) -> JoinHandle<()> {
    // Each priority's producer awaits its own publish acknowledgements.
    let publishing = Arc::new(Semaphore::new(max_publishing.max(1)));
    tokio::spawn(async move {
        let mut next = ctx.shared.t0;
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let gap = match arrival {
                Arrival::Fixed => 1.0 / rate,
                Arrival::Poisson => -(1.0 - rng.random::<f64>()).ln() / rate,
            };
            next += Duration::from_secs_f64(gap);
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            let permit = publishing
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let ctx = ctx.clone();
            tasks.spawn(async move {
                ctx.publish(prio, next).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// Closed loop: publishes a job, its priority drawn by `mix`, whenever a slot is free,
/// until `end`.
pub(super) fn closed_loop(ctx: Arc<PublishCtx>, mix: [u32; 3], end: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = ctx
            .shared
            .slots
            .clone()
            .expect("closed loop has slots: this is a bug");
        let total: u32 = mix.iter().sum::<u32>().max(1);
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = slots.acquire() => p.expect("never closed"),
                _ = tokio::time::sleep_until(end.into()) => break,
            };
            permit.forget();
            let now = Instant::now();
            if now >= end {
                break;
            }
            let prio = pick(&mix, rng.random_range(0..total));
            let ctx = ctx.clone();
            tasks.spawn(async move { ctx.publish(prio, now).await });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// The priority whose weight range in `mix` holds `pick` (P1 when every weight is 0).
fn pick(mix: &[u32; 3], mut pick: u32) -> usize {
    mix.iter()
        .position(|&w| {
            if pick < w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pick_follows_the_weights() {
        let mix = [1, 0, 2];
        assert_eq!(super::pick(&mix, 0), 0);
        assert_eq!(super::pick(&mix, 1), 2);
        assert_eq!(super::pick(&mix, 2), 2);
        assert_eq!(super::pick(&[0, 0, 0], 0), 1);
    }
}

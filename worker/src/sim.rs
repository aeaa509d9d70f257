//! The simulated device: a model whose batches take a configured time and return outputs
//! computed from their inputs, with no TorchScript file and no libtorch forward.
//!
//! A models TOML entry with a `sim = { batch_ms = 20.0, per_sample_ms = 0.0 }` table is
//! such a model (see docs/models.md, "Simulated device"). Its executor thread sleeps
//! `batch_ms + per_sample_ms × batch size` per batch — a device busy for that long, which
//! the batcher, the watchdog and the metrics see like any other — so a test or a benchmark
//! can run many workers on a few CPU cores and measure the queue path (nats-server,
//! dispatcher, Redis) rather than a model. Each job's one output is an f32 tensor of shape
//! `[inputs]`: element i is the sum of input i's elements as f32, so results are checkable.

use std::time::Duration;

use jetinfer_schemas::{JobError, Tensor};
use serde::Deserialize;

use crate::faults::{Faults, Injected};
use crate::torch_error::torch_error;

/// The `sim` table of a models TOML entry: how long one batch takes.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimDevice {
    /// Fixed time of every batch, ms (a forward's launch and weight reads).
    pub batch_ms: f64,
    /// Time added per job of the batch, ms.
    #[serde(default)]
    pub per_sample_ms: f64,
}

/// The longest a simulated batch may be configured to take: beyond it a batch would trip
/// the worker's forward watchdog (60 s by default) with no fault injected.
pub const MAX_SIM_MS: f64 = 10_000.0;

impl SimDevice {
    /// Whether both times are finite, not negative, and below [`MAX_SIM_MS`].
    pub fn is_valid(&self) -> bool {
        let ok = |v: f64| v.is_finite() && (0.0..=MAX_SIM_MS).contains(&v);
        ok(self.batch_ms) && ok(self.per_sample_ms)
    }

    /// How long a batch of `n` jobs takes.
    pub fn batch_time(&self, n: usize) -> Duration {
        Duration::from_secs_f64((self.batch_ms + self.per_sample_ms * n as f64) / 1e3)
    }

    /// Runs one batch on the calling (executor) thread: sleeps the batch's time, then
    /// returns per job its one output. Injected faults act here as at a real forward.
    pub(crate) fn run_batch(
        &self,
        faults: &Faults,
        inputs: &[Vec<Tensor<'static>>],
    ) -> Result<Vec<Vec<Tensor<'static>>>, JobError> {
        match faults.check(inputs) {
            Some(Injected::Error(e)) => return Err(torch_error(e)),
            Some(Injected::Hang) => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            None => {}
        }
        std::thread::sleep(self.batch_time(inputs.len()));
        Ok(inputs.iter().map(|job| vec![outputs_of(job)]).collect())
    }
}

/// A job's output: per input, the sum of its elements as f32.
pub fn outputs_of(job: &[Tensor<'_>]) -> Tensor<'static> {
    let sums: Vec<f32> = job.iter().map(|t| t.to_f32_vec().iter().sum()).collect();
    Tensor::from_f32(vec![sums.len() as i64], &sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_batch_takes_its_time_and_sums_each_input() {
        let sim = SimDevice {
            batch_ms: 20.0,
            per_sample_ms: 1.0,
        };
        let job = |x: f32| {
            vec![
                Tensor::from_f32(vec![2], &[x, 2.0 * x]),
                Tensor::owned(
                    jetinfer_schemas::DType::I64,
                    vec![1],
                    7i64.to_le_bytes().to_vec(),
                ),
            ]
        };
        let inputs: Vec<_> = (0..10).map(|i| job(i as f32)).collect();
        let started = Instant::now();
        let out = sim.run_batch(&Faults::default(), &inputs).unwrap();
        let took = started.elapsed().as_secs_f64() * 1e3;
        assert!(
            (30.0..60.0).contains(&took),
            "20 + 10 × 1 ms, took {took} ms"
        );
        assert_eq!(out.len(), 10);
        assert_eq!(out[3][0].shape, vec![2]);
        assert_eq!(out[3][0].to_f32_vec(), vec![9.0, 7.0]);
    }

    #[test]
    fn refuses_negative_or_endless_times() {
        let t = |batch_ms, per_sample_ms| SimDevice {
            batch_ms,
            per_sample_ms,
        };
        assert!(t(5.0, 0.02).is_valid());
        assert!(!t(-1.0, 0.0).is_valid());
        assert!(!t(1.0, f64::NAN).is_valid());
        assert!(!t(MAX_SIM_MS + 1.0, 0.0).is_valid());
    }
}

//! A model's recent batch forward time (exponential moving average), written by its batcher
//! and announced in heartbeats so dispatchers can size their timeouts to the model; with it,
//! the model's load meter (`meters.rs`: jobs served, busy time, capacity over a window).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::meters::ModelMeter;

/// The average in f64 bits; `u64::MAX` = no batch yet. Lock-free: one writer (the batcher's
/// completions), one reader (the heartbeat).
#[derive(Debug)]
pub(crate) struct BatchTime(AtomicU64, ModelMeter);

/// Weight of the newest batch in the average.
const ALPHA: f64 = 0.2;

impl Default for BatchTime {
    fn default() -> Self {
        BatchTime(AtomicU64::new(u64::MAX), ModelMeter::default())
    }
}

impl BatchTime {
    pub fn record(&self, ms: f64) {
        let next = match self.get() {
            Some(avg) => avg + ALPHA * (ms - avg),
            None => ms,
        };
        self.0.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The model's load meter.
    pub fn meter(&self) -> &ModelMeter {
        &self.1
    }

    pub fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages() {
        let t = BatchTime::default();
        assert_eq!(t.get(), None);
        t.record(10.0);
        assert_eq!(t.get(), Some(10.0));
        t.record(20.0);
        assert_eq!(t.get(), Some(12.0));
    }
}

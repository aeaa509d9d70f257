//! How many partition streams each priority has (`jetinfer_schemas::partitions`), as the
//! dispatcher published it in the metadata of the priority's partition-0 stream: read once
//! per priority, on its first publish, and again when a publish finds no stream for its
//! partition (the dispatcher was restarted with fewer).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use jetinfer_schemas::partitions::MAX_PARTITIONS;
use jetinfer_schemas::Priority;

/// 0 in a slot: not read yet.
const UNKNOWN: u16 = 0;

/// Partition counts per priority, shared by a client's clones.
#[derive(Clone, Default)]
pub(crate) struct PartitionCounts {
    counts: Arc<[AtomicU16; 3]>,
    /// Set by `Client::with_partitions`: never read from the streams.
    fixed: bool,
}

impl PartitionCounts {
    /// Counts that are never looked up: `n` partitions for every priority.
    pub fn fixed(n: u16) -> Self {
        let n = n.clamp(1, MAX_PARTITIONS);
        PartitionCounts {
            counts: Arc::new([AtomicU16::new(n), AtomicU16::new(n), AtomicU16::new(n)]),
            fixed: true,
        }
    }

    /// Priority `p`'s partition count, read from its partition-0 stream the first time. A
    /// stream that cannot be read (not created yet, no permission to read it) counts as one
    /// partition: every job then goes to partition 0, which is always right, only not spread.
    pub async fn count(&self, js: &jetstream::Context, p: Priority) -> u16 {
        let slot = &self.counts[p.rank()];
        let known = slot.load(Ordering::Relaxed);
        if known != UNKNOWN {
            return known;
        }
        let n = jetinfer_connect::streams::partition_count(js, p).await;
        slot.store(n, Ordering::Relaxed);
        n
    }

    /// Forgets priority `p`'s count, so the next publish reads it again; returns whether
    /// it was one that can change.
    pub fn forget(&self, p: Priority) -> bool {
        if self.fixed {
            return false;
        }
        self.counts[p.rank()].store(UNKNOWN, Ordering::Relaxed);
        true
    }
}

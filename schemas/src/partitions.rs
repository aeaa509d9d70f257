//! Partition streams: one priority's jobs spread over several JetStream streams.
//!
//! JetStream serves each stream on one goroutine with one store lock, so one stream carries
//! about 34,000 small jobs a second on the H100 host, whatever the GPUs behind it could run
//! (docs/benchmarks.md). A priority may therefore have `N` partition streams (the
//! dispatcher's `--partitions`, the same N for every priority):
//!
//! | partition | stream          | subject                              | consumer                 |
//! |-----------|-----------------|--------------------------------------|--------------------------|
//! | 0         | `JETINFER_P1`   | `jetinfer.jobs.p1.<model>`           | `jetinfer-dispatch-p1`   |
//! | k ≥ 1     | `JETINFER_P1_k` | `jetinfer.jobs.p1.<model>.k`         | `jetinfer-dispatch-p1-k` |
//!
//! Partition 0 is the stream and subject of before, so a producer that knows nothing of
//! partitions keeps working (its jobs all go to partition 0). A producer that does picks the
//! partition from the job id ([`partition_for`]: FNV-1a-32 mod N, a few lines in any
//! language), so a retried publish of one job lands in the same stream and JetStream's
//! `Nats-Msg-Id` de-duplication still holds. The dispatcher publishes N in the metadata of
//! each priority's partition-0 stream ([`PARTITIONS_METADATA_KEY`]); producers read it once.
//! Priority is untouched by partitions: the dispatcher's scheduler orders every partition's
//! jobs in one set of ready queues.

use crate::names::{consumer_name, job_subject, jobs_stream, JOBS_PREFIX};
use crate::Priority;

/// Most partitions per priority (`--partitions`): each is a stream and a consumer, and the
/// least-privilege NATS configuration names every one (deploy/nats/permissions.conf).
pub const MAX_PARTITIONS: u16 = 8;

/// Metadata key of a priority's partition-0 stream holding N, a decimal string; absent
/// means 1 (a dispatcher older than partitions).
pub const PARTITIONS_METADATA_KEY: &str = "jetinfer.partitions";

/// FNV-1a, 32 bit, over `bytes`: the hash producers in every language compute to spread jobs
/// (input stores, partitions). FNV-1a-32 of `"a"` is `0xe40c292c`.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The partition of job `id` when its priority has `partitions` of them.
pub fn partition_for(id: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    (fnv1a_32(id.as_bytes()) % u32::from(partitions)) as u16
}

/// The stream of partition `k` of priority `p`.
pub fn partition_stream(p: Priority, k: u16) -> String {
    match k {
        0 => jobs_stream(p).to_string(),
        k => format!("{}_{k}", jobs_stream(p)),
    }
}

/// The subject a producer publishes a job of `model` on, in partition `k` of `p`.
pub fn partition_subject(p: Priority, model: &str, k: u16) -> String {
    match k {
        0 => job_subject(p, model),
        k => format!("{}.{k}", job_subject(p, model)),
    }
}

/// The subjects partition `k`'s stream takes: one model token, then the partition number
/// for k ≥ 1. The filters of different partitions never overlap (different token counts or
/// last tokens).
pub fn partition_filter(p: Priority, k: u16) -> String {
    match k {
        0 => format!("{JOBS_PREFIX}.{}.*", p.as_str()),
        k => format!("{JOBS_PREFIX}.{}.*.{k}", p.as_str()),
    }
}

/// The durable pull consumer of partition `k` of `p`.
pub fn partition_consumer(p: Priority, k: u16) -> String {
    match k {
        0 => consumer_name(p),
        k => format!("{}-{k}", consumer_name(p)),
    }
}

/// N read from a partition-0 stream's metadata value (`None`: the key is absent); anything
/// unreadable or out of range counts as 1, so a producer always has a stream to publish to.
pub fn partitions_from_metadata(value: Option<&str>) -> u16 {
    value
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_zero_is_the_layout_of_before() {
        assert_eq!(partition_stream(Priority::P1, 0), "JETINFER_P1");
        assert_eq!(
            partition_subject(Priority::P1, "mlp", 0),
            "jetinfer.jobs.p1.mlp"
        );
        assert_eq!(partition_consumer(Priority::P1, 0), "jetinfer-dispatch-p1");
        assert_eq!(partition_filter(Priority::P1, 0), "jetinfer.jobs.p1.*");
    }

    #[test]
    fn other_partitions_have_their_own_names() {
        assert_eq!(partition_stream(Priority::P2, 3), "JETINFER_P2_3");
        assert_eq!(
            partition_subject(Priority::P2, "mlp", 3),
            "jetinfer.jobs.p2.mlp.3"
        );
        assert_eq!(
            partition_consumer(Priority::P2, 3),
            "jetinfer-dispatch-p2-3"
        );
        assert_eq!(partition_filter(Priority::P2, 3), "jetinfer.jobs.p2.*.3");
    }

    /// The vectors other languages' clients check against.
    #[test]
    fn partition_choice_vectors() {
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(partition_for("anything", 1), 0);
        assert_eq!(partition_for("a", 4), (0xe40c_292c_u32 % 4) as u16);
        let picks: Vec<u16> = (1..=8)
            .map(|i| partition_for(&format!("job-{i}"), 3))
            .collect();
        assert_eq!(picks, [2, 0, 1, 0, 1, 2, 0, 2]);
    }

    #[test]
    fn partitions_spread_ids_evenly() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_for(&format!("job-{i}"), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn metadata_values() {
        assert_eq!(partitions_from_metadata(None), 1);
        assert_eq!(partitions_from_metadata(Some("4")), 4);
        assert_eq!(partitions_from_metadata(Some("0")), 1);
        assert_eq!(partitions_from_metadata(Some("99")), 1);
        assert_eq!(partitions_from_metadata(Some("x")), 1);
    }
}

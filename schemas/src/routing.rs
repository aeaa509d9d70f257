//! Traffic routing: which declared version a job that names no version runs on.
//!
//! A model's traffic weights (hundredths, summing to 100, see [`crate::registry`]) are
//! laid over [`ROUTE_BUCKETS`] buckets, 10 per hundredth, in the order the versions were
//! declared: with `1=0.9,2=0.1`, buckets 0..900 go to version 1 and 900..1000 to version 2.
//! A job's bucket is [`route_bucket`] of its routing key ([`route_key`]): the value of the
//! model's sticky `meta` field when the job carries it (one user always sees one version),
//! else the job id (a redelivered job keeps its version).
//!
//! The hash is 64-bit FNV-1a over the key's UTF-8 bytes, modulo 1000 — a few lines in any
//! language, so clients and tools can tell which version a key goes to. Declaration order
//! makes canaries monotone: raising a later version's weight only moves buckets onto it.

use std::collections::BTreeMap;

use crate::registry::{ModelDecl, Weight};

/// Buckets the weights are laid over: 10 per hundredth, so 0.01 is exactly 10 buckets.
pub const ROUTE_BUCKETS: u16 = 1000;

/// Buckets per hundredth of weight.
const BUCKETS_PER_HUNDREDTH: u16 = ROUTE_BUCKETS / 100;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The bucket (0..1000) of a routing key: FNV-1a 64 of its UTF-8 bytes, modulo 1000.
pub fn route_bucket(key: &str) -> u16 {
    (fnv1a64(key.as_bytes()) % u64::from(ROUTE_BUCKETS)) as u16
}

/// The routing key of a job: the value of `sticky_key` in its meta when the model
/// declares one and the job carries it, else the job id.
pub fn route_key<'a>(
    sticky_key: Option<&str>,
    job_id: &'a str,
    meta: Option<&'a BTreeMap<String, String>>,
) -> &'a str {
    sticky_key
        .and_then(|k| meta?.get(k))
        .map_or(job_id, String::as_str)
}

/// A model's weights as bucket ranges: the versions with traffic, in declaration order,
/// each with the end (exclusive) of its range. Built once per declaration; picking a
/// version is a search over a handful of integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficSplit {
    /// `(end, version)`: buckets `previous end..end` go to `version`. The last end is
    /// [`ROUTE_BUCKETS`] for a valid declaration (weights sum to 100).
    ranges: Vec<(u16, String)>,
}

impl TrafficSplit {
    /// The split of a declaration's weights (versions in declaration order; weight 0 and
    /// versions the weights leave out get no buckets).
    pub fn of(decl: &ModelDecl) -> TrafficSplit {
        let mut end = 0u16;
        let ranges = decl
            .versions
            .iter()
            .filter_map(|v| {
                let w: Weight = *decl.weights.get(&v.version)?;
                (w > 0).then(|| {
                    end = end.saturating_add(w.saturating_mul(BUCKETS_PER_HUNDREDTH));
                    (end, v.version.clone())
                })
            })
            .collect();
        TrafficSplit { ranges }
    }

    /// The versions with traffic, in bucket order.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.ranges.iter().map(|(_, v)| v.as_str())
    }

    /// Index (into [`Self::versions`]) of the version owning `bucket`, `None` only for a
    /// split without traffic (an invalid declaration). A bucket past the last range (an
    /// invalid declaration summing below 100) goes to the last version.
    pub fn pick_index(&self, bucket: u16) -> Option<usize> {
        if self.ranges.is_empty() {
            return None;
        }
        let i = self.ranges.partition_point(|(end, _)| *end <= bucket);
        Some(i.min(self.ranges.len() - 1))
    }

    /// The version owning `bucket`.
    pub fn pick(&self, bucket: u16) -> Option<&str> {
        self.pick_index(bucket).map(|i| self.ranges[i].1.as_str())
    }

    /// The version a job with this id and meta runs on under `decl` (whose split this is).
    pub fn route<'s>(
        &'s self,
        decl: &ModelDecl,
        job_id: &str,
        meta: Option<&BTreeMap<String, String>>,
    ) -> Option<&'s str> {
        let key = route_key(decl.sticky_key.as_deref(), job_id, meta);
        self.pick(route_bucket(key))
    }
}

impl ModelDecl {
    /// The version a job for this model that names no version runs on: the one definition
    /// of routing, for tools and tests (the dispatcher keeps each model's
    /// [`TrafficSplit`] built).
    pub fn routed_version(
        &self,
        job_id: &str,
        meta: Option<&BTreeMap<String, String>>,
    ) -> Option<String> {
        TrafficSplit::of(self)
            .route(self, job_id, meta)
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::decl;

    fn split(weights: &[(&str, Weight)]) -> (ModelDecl, TrafficSplit) {
        let versions: Vec<&str> = weights.iter().map(|(v, _)| *v).collect();
        let mut d = decl("m", &versions);
        d.weights = weights.iter().map(|(v, w)| (v.to_string(), *w)).collect();
        d.validate().unwrap();
        let s = TrafficSplit::of(&d);
        (d, s)
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a", "foobar".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(
            route_bucket("foobar"),
            (0x85944171f73967e8u64 % 1000) as u16
        );
    }

    #[test]
    fn bucket_edges_fall_on_hundredths() {
        let (_, s) = split(&[("1", 90), ("2", 10)]);
        assert_eq!(s.pick(0), Some("1"));
        assert_eq!(s.pick(899), Some("1"));
        assert_eq!(s.pick(900), Some("2"));
        assert_eq!(s.pick(999), Some("2"));
        // 0.01 is exactly ten buckets.
        let (_, s) = split(&[("a", 1), ("b", 98), ("c", 1)]);
        let owners: Vec<&str> = (0..ROUTE_BUCKETS).map(|b| s.pick(b).unwrap()).collect();
        assert_eq!(owners.iter().filter(|v| **v == "a").count(), 10);
        assert_eq!(owners.iter().filter(|v| **v == "c").count(), 10);
        assert_eq!((owners[9], owners[10]), ("a", "b"));
        assert_eq!((owners[989], owners[990]), ("b", "c"));
    }

    #[test]
    fn declaration_order_and_zero_weights() {
        // Declared 2 before 1: version 2 owns the low buckets, whatever the map order.
        let mut d = decl("m", &["2", "1", "3"]);
        d.weights = BTreeMap::from([("1".into(), 30), ("2".into(), 70), ("3".into(), 0)]);
        d.validate().unwrap();
        let s = TrafficSplit::of(&d);
        assert_eq!(s.versions().collect::<Vec<_>>(), ["2", "1"]);
        assert_eq!((s.pick(699), s.pick(700)), (Some("2"), Some("1")));
        // All traffic on one version: every bucket.
        let (_, s) = split(&[("1", 0), ("2", 100)]);
        assert!((0..ROUTE_BUCKETS).all(|b| s.pick(b) == Some("2")));
    }

    #[test]
    fn raising_a_canary_only_moves_buckets_onto_it() {
        let (_, before) = split(&[("1", 90), ("2", 10)]);
        let (_, after) = split(&[("1", 80), ("2", 20)]);
        for b in 0..ROUTE_BUCKETS {
            if before.pick(b) == Some("2") {
                assert_eq!(after.pick(b), Some("2"), "bucket {b} left the canary");
            }
        }
    }

    #[test]
    fn job_ids_split_by_the_weights() {
        // Sequential ids (as producers make them) and random-looking ones.
        for (weights, want) in [
            (&[("1", 90), ("2", 10)][..], 0.10),
            (&[("1", 99), ("2", 1)][..], 0.01),
            (&[("1", 50), ("2", 50)][..], 0.50),
        ] {
            let (d, s) = split(weights);
            for prefix in ["job-", "routing-1a2b3c4d-p1-mlp-", ""] {
                let n = 100_000;
                let second = (0..n)
                    .filter(|i| s.route(&d, &format!("{prefix}{i}"), None) == Some("2"))
                    .count();
                let share = second as f64 / n as f64;
                assert!(
                    (share - want).abs() < 0.005,
                    "{prefix:?} {weights:?}: share {share}"
                );
            }
        }
    }

    #[test]
    fn a_sticky_key_routes_by_its_meta_value() {
        let (mut d, s) = split(&[("1", 50), ("2", 50)]);
        d.sticky_key = Some("user".into());
        let meta = |u: &str| BTreeMap::from([("user".to_string(), u.to_string())]);
        for user in ["alice", "bob", "carol", "u-17"] {
            let m = meta(user);
            let first = s.route(&d, "job-0", Some(&m));
            assert!((1..200).all(|i| s.route(&d, &format!("job-{i}"), Some(&m)) == first));
            assert_eq!(first, s.pick(route_bucket(user)));
        }
        // Without the field the job id decides; other meta fields do not matter.
        let other = BTreeMap::from([("tenant".to_string(), "x".to_string())]);
        assert_eq!(
            route_key(d.sticky_key.as_deref(), "job-9", Some(&other)),
            "job-9"
        );
        assert_eq!(route_key(None, "job-9", Some(&meta("alice"))), "job-9");
        assert_eq!(
            d.routed_version("job-1", Some(&meta("alice"))).as_deref(),
            s.pick(route_bucket("alice"))
        );
    }
}

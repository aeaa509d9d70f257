//! The claim check: a job whose inputs are large leaves them in Redis under
//! `<prefix>:input:<id>` and carries only an [`InputsRef`] through JetStream. The broker
//! then moves ~300 bytes per job instead of the whole payload, four times over; the worker
//! reads the inputs of a whole bundle with one `MGET` and deletes them once the results
//! are stored.
//!
//! The stored value is the MessagePack array of tensors, exactly what the job's `inputs`
//! field would hold inline. The reference names its length and its BLAKE3 content digest
//! ([`inputs_digest`], the result cache's key), so a worker reading it checks that it got
//! the very inputs the producer published, and the cache key costs nothing more.

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::limits::Limits;
use crate::tensor::{inputs_digest, Tensor};

/// Inputs kept in Redis instead of inside the job message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InputsRef {
    /// Length of the stored value (the MessagePack array of input tensors), bytes.
    pub bytes: u64,
    /// [`inputs_digest`] of the inputs: 64 lowercase hex digits.
    pub digest: String,
    /// Which input store holds them, an index into the stores producers and workers list in
    /// the same order (`--inputs-redis-url`); 0, the result store, is left out on the wire, so
    /// a reference without this field is what version 1 of the claim check wrote.
    #[serde(default, skip_serializing_if = "is_main_store")]
    pub store: u16,
}

fn is_main_store(store: &u16) -> bool {
    *store == 0
}

/// The input store a job's inputs go to when there are `stores` of them: FNV-1a (32 bit) of
/// the job id, modulo `stores`. Spreading by id (not by size or load) needs no coordination
/// and lets clients in other languages pick the same store; the reference names the store
/// anyway, so a worker never has to recompute this.
pub fn input_store_for(id: &str, stores: u16) -> u16 {
    if stores <= 1 {
        return 0;
    }
    (crate::partitions::fnv1a_32(id.as_bytes()) % u32::from(stores)) as u16
}

/// Inline payloads at least this large are sent by reference by default (the Rust client's
/// `inline_limit`). Below it the extra Redis round trips cost more than the broker saves;
/// ResNet-50's 150 KB images go by reference, MiniLM's 2 KB token ids inline.
pub const DEFAULT_INLINE_LIMIT: usize = 32 << 10;

impl InputsRef {
    /// Checks the reference's form: a length within the payload limit and a digest that
    /// looks like one (`invalid_input` otherwise).
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        if self.bytes == 0 || self.bytes > limits.max_payload_bytes as u64 {
            return Err(JobError::invalid_input(format!(
                "inputs_ref.bytes must be 1..={}, got {}",
                limits.max_payload_bytes, self.bytes
            )));
        }
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if self.digest.len() != 64 || !self.digest.chars().all(hex) {
            return Err(JobError::invalid_input(
                "inputs_ref.digest must be 64 lowercase hex digits (BLAKE3)",
            ));
        }
        Ok(())
    }
}

/// Encodes `inputs` for the store and makes their reference. Returns `(value, reference)`.
pub fn store_inputs(inputs: &[Tensor<'_>]) -> (Vec<u8>, InputsRef) {
    let value = crate::encode(&inputs);
    let reference = InputsRef {
        bytes: value.len() as u64,
        digest: inputs_digest(inputs),
        store: 0,
    };
    (value, reference)
}

/// Decodes inputs read from the store and checks them against their reference: a value of
/// another length or digest (overwritten, truncated, or not what the producer published)
/// is `bad_payload`, as is a value that is not an array of tensors.
pub fn load_inputs<'a>(
    value: &'a [u8],
    reference: &InputsRef,
) -> Result<Vec<Tensor<'a>>, JobError> {
    if value.len() as u64 != reference.bytes {
        return Err(JobError::bad_payload(format!(
            "stored inputs are {} bytes, the job's reference says {}",
            value.len(),
            reference.bytes
        )));
    }
    let inputs: Vec<Tensor<'a>> = rmp_serde::from_slice(value)
        .map_err(|e| JobError::bad_payload(format!("stored inputs are not tensors: {e}")))?;
    if inputs_digest(&inputs) != reference.digest {
        return Err(JobError::bad_payload(
            "stored inputs do not match the job's digest",
        ));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn sample() -> Vec<Tensor<'static>> {
        vec![Tensor::from_f32(vec![2], &[1.0, 2.0])]
    }

    #[test]
    fn stored_inputs_load_back_borrowed_and_verified() {
        let (value, reference) = store_inputs(&sample());
        reference.validate(&Limits::default()).unwrap();
        let back = load_inputs(&value, &reference).unwrap();
        assert_eq!(back, sample());
        assert!(matches!(back[0].data, std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn other_bytes_than_referenced_are_bad_payload() {
        let (value, reference) = store_inputs(&sample());
        let (other, _) = store_inputs(&[Tensor::from_f32(vec![2], &[1.0, 3.0])]);
        assert_eq!(other.len(), value.len());
        let code = |v: &[u8]| load_inputs(v, &reference).unwrap_err().code;
        assert_eq!(
            code(&other),
            ErrorCode::BadPayload,
            "same length, other data"
        );
        assert_eq!(code(&value[1..]), ErrorCode::BadPayload, "truncated");
        assert_eq!(
            code(&vec![0xc1; value.len()]),
            ErrorCode::BadPayload,
            "not msgpack"
        );
    }

    #[test]
    fn input_stores_spread_by_id_and_store_zero_stays_off_the_wire() {
        assert_eq!(input_store_for("anything", 1), 0);
        // FNV-1a 32 of "a" is 0xe40c292c: the value other languages must reproduce.
        assert_eq!(input_store_for("a", 1000), (0xe40c_292c_u32 % 1000) as u16);
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            counts[input_store_for(&format!("job-{i}"), 3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        let (_, mut reference) = store_inputs(&sample());
        let v0 = crate::encode(&reference);
        reference.store = 2;
        let v2 = crate::encode(&reference);
        assert!(!String::from_utf8_lossy(&v0).contains("store"));
        assert!(String::from_utf8_lossy(&v2).contains("store"));
        let back: InputsRef = rmp_serde::from_slice(&v0).unwrap();
        assert_eq!(back.store, 0);
    }

    #[test]
    fn malformed_references_are_invalid_input() {
        let (_, good) = store_inputs(&sample());
        let limits = Limits::default();
        for bad in [
            InputsRef {
                bytes: 0,
                ..good.clone()
            },
            InputsRef {
                bytes: limits.max_payload_bytes as u64 + 1,
                ..good.clone()
            },
            InputsRef {
                digest: "ab".into(),
                ..good.clone()
            },
            InputsRef {
                digest: good.digest.to_uppercase(),
                ..good.clone()
            },
        ] {
            assert_eq!(
                bad.validate(&limits).unwrap_err().code,
                ErrorCode::InvalidInput,
                "{bad:?}"
            );
        }
    }
}

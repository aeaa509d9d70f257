//! Size limits and identifier rules.

use crate::error::JobError;

/// Longest job id accepted (bytes).
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest model name or version accepted (bytes).
pub const MAX_NAME_LEN: usize = 64;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;

/// Limits a process applies to jobs; all configurable, with defaults that suit one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest job message accepted; larger ones are refused before decoding.
    pub max_payload_bytes: usize,
    /// Most elements in one input tensor.
    pub max_elements: u64,
    /// Most input tensors in one job.
    pub max_inputs: usize,
    /// Most `meta` entries in one job (they are copied into its result).
    pub max_meta_entries: usize,
    /// Most bytes of `meta` keys and values together in one job.
    pub max_meta_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 8 << 20,
            max_elements: 1 << 26,
            max_inputs: 16,
            max_meta_entries: 32,
            max_meta_bytes: 4096,
        }
    }
}

/// Job ids: 1..=128 bytes of `[A-Za-z0-9._:-]`, so they are safe in subjects and keys.
pub fn validate_job_id(id: &str) -> Result<(), JobError> {
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
        return Err(JobError::bad_payload(format!(
            "job id must be 1..={MAX_JOB_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(JobError::bad_payload(format!(
            "job id has character {c:?} outside [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

/// True when `id` is a valid job id (see [`validate_job_id`]).
pub fn is_valid_job_id(id: &str) -> bool {
    validate_job_id(id).is_ok()
}

/// Model names are subject tokens: 1..=64 bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Versions appear in cache keys: 1..=64 bytes of `[A-Za-z0-9._-]`.
pub fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_NAME_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert!(is_valid_job_id("a"));
        assert!(is_valid_job_id("job-1.2_3:x"));
        assert!(!is_valid_job_id(""));
        assert!(!is_valid_job_id("a b"));
        assert!(!is_valid_job_id("a*"));
        assert!(!is_valid_job_id("ü"));
        assert!(is_valid_job_id(&"x".repeat(128)));
        assert!(!is_valid_job_id(&"x".repeat(129)));
    }

    #[test]
    fn model_names() {
        assert!(is_valid_model_name("resnet50"));
        assert!(is_valid_model_name("mini-lm_6"));
        assert!(!is_valid_model_name("a.b"));
        assert!(!is_valid_model_name("a>"));
        assert!(!is_valid_model_name(""));
    }
}

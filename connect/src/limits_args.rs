//! The job limits every process that decodes jobs applies, as one set of flags: the
//! dispatcher checks jobs at intake and the worker checks them again (inputs sent by
//! reference are only seen there), so both must agree; both flatten [`LimitsArgs`].

use jetinfer_schemas::Limits;

/// `--max-payload-bytes`, `--max-elements`, `--max-inputs`, `--max-meta-entries`,
/// `--max-meta-bytes` (env `JETINFER_MAX_…`), defaulting to [`Limits::default`].
#[derive(clap::Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Largest job message (or inputs stored by reference) accepted; larger ones get
    /// `bad_payload` without being decoded.
    #[arg(long, env = "JETINFER_MAX_PAYLOAD_BYTES", default_value_t = Limits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Most elements in one input tensor (bounds every dynamic dimension too).
    #[arg(long, env = "JETINFER_MAX_ELEMENTS", default_value_t = Limits::default().max_elements)]
    pub max_elements: u64,
    /// Most input tensors in one job.
    #[arg(long, env = "JETINFER_MAX_INPUTS", default_value_t = Limits::default().max_inputs)]
    pub max_inputs: usize,
    /// Most `meta` entries in one job.
    #[arg(long, env = "JETINFER_MAX_META_ENTRIES", default_value_t = Limits::default().max_meta_entries)]
    pub max_meta_entries: usize,
    /// Most bytes of `meta` keys and values together in one job.
    #[arg(long, env = "JETINFER_MAX_META_BYTES", default_value_t = Limits::default().max_meta_bytes)]
    pub max_meta_bytes: usize,
}

impl LimitsArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_elements: self.max_elements,
            max_inputs: self.max_inputs,
            max_meta_entries: self.max_meta_entries,
            max_meta_bytes: self.max_meta_bytes,
        }
    }
}

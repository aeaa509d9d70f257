//! The job a producer publishes, and its decoding and validation.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::inputs_ref::{load_inputs, InputsRef};
use crate::limits::{is_valid_model_name, is_valid_version, validate_job_id, Limits};
use crate::tensor::Tensor;
use crate::SCHEMA_VERSION;

/// The hand-written reader [`decode_job`] tries first.
mod reader;

/// One inference job: one sample per input tensor (no batch dimension).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Job<'a> {
    /// Schema version, 1.
    pub v: u32,
    /// Job id, also the `Nats-Msg-Id` header (de-duplication) and the result key.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Model name; must equal the subject's model token.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Model version; absent = whichever version the workers serve.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub version: Option<Cow<'a, str>>,
    /// Input tensors in the model's argument order; empty when `inputs_ref` is set.
    #[serde(borrow)]
    pub inputs: Vec<Tensor<'a>>,
    /// The inputs kept in Redis instead (the claim check, see [`crate::inputs_ref`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_ref: Option<InputsRef>,
    /// Absolute deadline, Unix ms; absent = the priority's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Whether the content-addressed result cache may answer this job (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// Opaque key/values echoed in the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, String>>,
}

impl<'a> Job<'a> {
    /// A job with the required fields; set the optional ones on the value.
    pub fn new(
        id: impl Into<Cow<'a, str>>,
        model: impl Into<Cow<'a, str>>,
        inputs: Vec<Tensor<'a>>,
    ) -> Self {
        Job {
            v: SCHEMA_VERSION,
            id: id.into(),
            model: model.into(),
            version: None,
            inputs,
            inputs_ref: None,
            deadline_ms: None,
            cache: None,
            meta: None,
        }
    }

    /// The digest that names this job's inputs (see [`crate::tensor::inputs_digest`]): the
    /// reference's when they travel by reference, computed from the inline inputs otherwise.
    pub fn inputs_digest(&self) -> String {
        match &self.inputs_ref {
            Some(r) => r.digest.clone(),
            None => crate::tensor::inputs_digest(&self.inputs),
        }
    }

    /// Whether the result cache may be used (default true).
    pub fn use_cache(&self) -> bool {
        self.cache.unwrap_or(true)
    }

    /// Replaces a reference by the inputs read from the store, checked against it (see
    /// [`load_inputs`]) and against the limits. A job without a reference is left as is.
    pub fn attach_inputs(&mut self, value: &'a [u8], limits: &Limits) -> Result<(), JobError> {
        let Some(reference) = self.inputs_ref.take() else {
            return Ok(());
        };
        self.inputs = load_inputs(value, &reference)?;
        self.validate_inputs(limits)
    }

    /// Checks what needs no model: id (`bad_payload`), model name and version, input
    /// count and each tensor's structure, or the form of the inputs' reference
    /// (`invalid_input`).
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        validate_job_id(&self.id)?;
        if !is_valid_model_name(&self.model) {
            return Err(JobError::invalid_input(format!(
                "model name {:?} is not [A-Za-z0-9_-]{{1,64}}",
                self.model
            )));
        }
        if let Some(v) = &self.version {
            if !is_valid_version(v) {
                return Err(JobError::invalid_input(format!(
                    "version {v:?} is not [A-Za-z0-9._-]{{1,64}}"
                )));
            }
        }
        if let Some(meta) = &self.meta {
            let bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
            if meta.len() > limits.max_meta_entries || bytes > limits.max_meta_bytes {
                return Err(JobError::invalid_input(format!(
                    "meta has {} entries of {bytes} bytes; at most {} entries of {} bytes",
                    meta.len(),
                    limits.max_meta_entries,
                    limits.max_meta_bytes
                )));
            }
        }
        match &self.inputs_ref {
            Some(_) if !self.inputs.is_empty() => Err(JobError::invalid_input(
                "a job has inputs or inputs_ref, not both",
            )),
            Some(reference) => reference.validate(limits),
            None => self.validate_inputs(limits),
        }
    }

    /// Input count and each tensor's structure (`invalid_input`).
    fn validate_inputs(&self, limits: &Limits) -> Result<(), JobError> {
        if self.inputs.is_empty() || self.inputs.len() > limits.max_inputs {
            return Err(JobError::invalid_input(format!(
                "a job needs 1..={} inputs, got {}",
                limits.max_inputs,
                self.inputs.len()
            )));
        }
        for (i, t) in self.inputs.iter().enumerate() {
            t.validate(limits)
                .map_err(|e| JobError::invalid_input(format!("input {i}: {}", e.message)))?;
        }
        Ok(())
    }
}

/// Decodes a job message, refusing oversized payloads before touching them.
///
/// Only the structure is checked here (`bad_payload`); call [`Job::validate`] next.
pub fn decode_job<'a>(payload: &'a [u8], limits: &Limits) -> Result<Job<'a>, JobError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(JobError::bad_payload(format!(
            "payload is {} bytes, the limit is {}",
            payload.len(),
            limits.max_payload_bytes
        )));
    }
    // The usual shape is read by hand; anything else, and every error, is `rmp_serde`'s.
    let job: Job<'a> = match reader::read_job(payload) {
        Some(job) => job,
        None => rmp_serde::from_slice(payload)
            .map_err(|e| JobError::bad_payload(format!("not a job: {e}")))?,
    };
    if job.v != SCHEMA_VERSION {
        return Err(JobError::bad_payload(format!(
            "unknown schema version {} (this build reads {SCHEMA_VERSION})",
            job.v
        )));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, DType, ErrorCode};

    /// {v:1, id:"j1", model:"mlp", inputs:[{dtype:"f32", shape:[2], data:bin(1.0f32, 2.0f32)}]}
    /// written by hand, byte by byte, so other languages can check against it.
    const JOB_HEX: &str = concat!(
        "84", // map of 4
        "a176",
        "01", // "v": 1
        "a26964",
        "a26a31", // "id": "j1"
        "a56d6f64656c",
        "a36d6c70", // "model": "mlp"
        "a6696e70757473",
        "91", // "inputs": array of 1
        "83", // map of 3
        "a56474797065",
        "a3663332", // "dtype": "f32"
        "a57368617065",
        "9102", // "shape": [2]
        "a464617461",
        "c408",
        "0000803f00000040", // "data": bin 8
    );

    #[test]
    fn hand_written_bytes_decode_and_encode_identically() {
        let bytes = hex::decode(JOB_HEX).unwrap();
        let job = decode_job(&bytes, &Limits::default()).unwrap();
        assert_eq!(job.id, "j1");
        assert_eq!(job.model, "mlp");
        assert_eq!(job.inputs[0].dtype, DType::F32);
        assert_eq!(job.inputs[0].to_f32_vec(), vec![1.0, 2.0]);
        assert!(
            matches!(job.inputs[0].data, Cow::Borrowed(_)),
            "tensor data is borrowed from the message"
        );
        job.validate(&Limits::default()).unwrap();
        let expected = Job::new("j1", "mlp", vec![Tensor::from_f32(vec![2], &[1.0, 2.0])]);
        assert_eq!(job, expected);
        assert_eq!(hex::encode(encode(&expected)), JOB_HEX);
    }

    #[test]
    fn meta_is_bounded_in_entries_and_bytes() {
        let limits = Limits::default();
        let mut job = Job::new("j", "m", vec![Tensor::from_f32(vec![1], &[1.0])]);
        job.meta = Some(
            (0..limits.max_meta_entries)
                .map(|i| (format!("k{i}"), "v".into()))
                .collect(),
        );
        job.validate(&limits).unwrap();
        job.meta = Some(
            (0..=limits.max_meta_entries)
                .map(|i| (format!("k{i}"), "v".into()))
                .collect(),
        );
        assert_eq!(
            job.validate(&limits).unwrap_err().code,
            ErrorCode::InvalidInput
        );
        job.meta = Some([("k".to_string(), "x".repeat(limits.max_meta_bytes))].into());
        assert_eq!(
            job.validate(&limits).unwrap_err().code,
            ErrorCode::InvalidInput
        );
    }

    #[test]
    fn round_trip_with_optional_fields() {
        let mut job = Job::new(
            "a:b",
            "m",
            vec![Tensor::owned(DType::U8, vec![3], vec![1, 2, 3])],
        );
        job.version = Some("2".into());
        job.deadline_ms = Some(123);
        job.cache = Some(false);
        job.meta = Some([("k".to_string(), "v".to_string())].into());
        let bytes = encode(&job);
        assert_eq!(decode_job(&bytes, &Limits::default()).unwrap(), job);
    }

    #[test]
    fn unknown_keys_are_ignored() {
        // {v:1, id:"x", model:"m", inputs:[], extra:[1,[2]]}
        let bytes =
            hex::decode("85a17601a26964a178a56d6f64656ca16da6696e7075747390a5657874726192019102")
                .unwrap();
        let job = decode_job(&bytes, &Limits::default()).unwrap();
        assert_eq!(job.id, "x");
        assert_eq!(
            job.validate(&Limits::default()).unwrap_err().code,
            ErrorCode::InvalidInput,
            "no inputs"
        );
    }

    fn code_of(bytes: &[u8]) -> ErrorCode {
        match decode_job(bytes, &Limits::default()) {
            Err(e) => e.code,
            Ok(job) => {
                job.validate(&Limits::default())
                    .map(|_| panic!("accepted"))
                    .unwrap_err()
                    .code
            }
        }
    }

    #[test]
    fn bad_payloads() {
        assert_eq!(code_of(b"not msgpack at all"), ErrorCode::BadPayload);
        let good = hex::decode(JOB_HEX).unwrap();
        assert_eq!(
            code_of(&good[..good.len() - 3]),
            ErrorCode::BadPayload,
            "truncated"
        );
        // map {v:1, id:"x", model:"m", inputs:[{dtype:"u8", shape:[1], data: bin32 claiming 4 GB}]}
        let mut huge = hex::decode("84a17601a26964a178a56d6f64656ca16da6696e707574739183a56474797065a27538a5736861706591 01a464617461c6ffffffff".replace(' ', "")).unwrap();
        huge.extend_from_slice(&[0; 16]);
        assert_eq!(
            code_of(&huge),
            ErrorCode::BadPayload,
            "bin header claiming 4 GB"
        );
        // deeply nested arrays: 100k levels of [[[[...
        let mut nested = vec![0x81, 0xa1, b'v'];
        nested.extend(std::iter::repeat(0x91).take(100_000));
        nested.push(0x01);
        assert_eq!(code_of(&nested), ErrorCode::BadPayload, "deep nesting");
        // {v:2, ...} unknown schema version
        let mut v2 = good.clone();
        v2[3] = 0x02;
        assert_eq!(code_of(&v2), ErrorCode::BadPayload);
        // missing inputs: {v:1, id:"x", model:"m"}
        assert_eq!(
            code_of(&hex::decode("83a17601a26964a178a56d6f64656ca16d").unwrap()),
            ErrorCode::BadPayload
        );
        // wrong type: id is an integer
        assert_eq!(
            code_of(&hex::decode("84a17601a2696405a56d6f64656ca16da6696e7075747390").unwrap()),
            ErrorCode::BadPayload
        );
        let limits = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            decode_job(&good, &limits).unwrap_err().code,
            ErrorCode::BadPayload,
            "over the size limit"
        );
    }

    #[test]
    fn invalid_ids_are_bad_payload_and_bad_tensors_invalid_input() {
        let t = || vec![Tensor::from_f32(vec![1], &[1.0])];
        for id in ["", "a b", "é", &"x".repeat(200)] {
            let job = Job::new(id.to_string(), "m", t());
            assert_eq!(code_of(&encode(&job)), ErrorCode::BadPayload, "id {id:?}");
        }
        let job = Job::new(
            "ok",
            "m",
            vec![Tensor::owned(DType::F32, vec![2], vec![0; 7])],
        );
        assert_eq!(code_of(&encode(&job)), ErrorCode::InvalidInput);
        let job = Job::new(
            "ok",
            "m",
            vec![Tensor::owned(
                DType::F32,
                vec![1_000_000, 1_000_000],
                vec![],
            )],
        );
        assert_eq!(code_of(&encode(&job)), ErrorCode::InvalidInput);
        let job = Job::new("ok", "m", vec![Tensor::owned(DType::F32, vec![-3], vec![])]);
        assert_eq!(code_of(&encode(&job)), ErrorCode::InvalidInput);
        let job = Job::new("ok", "a.b", t());
        assert_eq!(code_of(&encode(&job)), ErrorCode::InvalidInput);
    }
}

//! The result of a job, stored in Redis at `<prefix>:result:<id>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, JobError};
use crate::tensor::Tensor;
use crate::SCHEMA_VERSION;

/// How a job ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Expired => "expired",
        }
    }
}

/// The error of a failed job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl From<JobError> for ErrorBody {
    fn from(e: JobError) -> Self {
        ErrorBody {
            code: e.code,
            message: e.message,
        }
    }
}

/// Where the job's time went, in milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// From publish (JetStream timestamp) until its batch started.
    #[serde(default)]
    pub queued_ms: f64,
    /// Jobs in the batch that ran this one (0 when no model ran).
    #[serde(default)]
    pub batch_size: u32,
    /// The batch's forward pass, including host ↔ device copies.
    #[serde(default)]
    pub compute_ms: f64,
    /// From publish until the result was written.
    #[serde(default)]
    pub total_ms: f64,
}

/// A job's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JobResult<'a> {
    pub v: u32,
    pub id: String,
    pub status: Status,
    pub model: String,
    /// The version that served the job ("" when no model was reached).
    #[serde(default)]
    pub version: String,
    #[serde(borrow, default)]
    pub outputs: Vec<Tensor<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Id of the worker or dispatcher that produced the result.
    #[serde(default)]
    pub worker: String,
    /// True when the content-addressed cache answered.
    #[serde(default)]
    pub cached: bool,
    /// How many times the job was delivered (1 on the first try).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub completed_at_ms: u64,
}

impl<'a> JobResult<'a> {
    /// A successful result; timings and worker are filled in by the caller.
    pub fn ok(
        id: impl Into<String>,
        model: impl Into<String>,
        version: impl Into<String>,
        outputs: Vec<Tensor<'a>>,
    ) -> Self {
        JobResult {
            v: SCHEMA_VERSION,
            id: id.into(),
            status: Status::Ok,
            model: model.into(),
            version: version.into(),
            outputs,
            error: None,
            meta: BTreeMap::new(),
            worker: String::new(),
            cached: false,
            attempts: 1,
            timings: Timings::default(),
            completed_at_ms: crate::now_ms(),
        }
    }

    /// A failed result; `expired` gets status `expired`, every other code `error`.
    pub fn failed(id: impl Into<String>, model: impl Into<String>, error: JobError) -> Self {
        let status = if error.code == ErrorCode::Expired {
            Status::Expired
        } else {
            Status::Error
        };
        JobResult {
            status,
            error: Some(error.into()),
            ..JobResult::ok(id, model, "", Vec::new())
        }
    }

    /// The error code, if the job failed.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    /// Detaches the result from the buffer it was decoded from.
    pub fn into_owned(self) -> JobResult<'static> {
        JobResult {
            outputs: self.outputs.into_iter().map(Tensor::into_owned).collect(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn round_trip() {
        let mut r = JobResult::ok("j1", "mlp", "1", vec![Tensor::from_f32(vec![1], &[0.5])]);
        r.worker = "w1".into();
        r.timings = Timings {
            queued_ms: 1.5,
            batch_size: 4,
            compute_ms: 0.25,
            total_ms: 2.0,
        };
        let bytes = encode(&r);
        let back: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
        let e = JobResult::failed("j2", "mlp", JobError::new(ErrorCode::Expired, "late"));
        assert_eq!(e.status, Status::Expired);
        let bytes = encode(&e);
        let back: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.error_code(), Some(ErrorCode::Expired));
    }

    #[test]
    fn hand_written_error_result() {
        // {v:1, id:"j", status:"error", model:"m", error:{code:"bad_payload", message:"x"}}
        // The minimal result another implementation might write: every other field defaults.
        let bytes = hex::decode(concat!(
            "85a17601a26964a16aa6737461747573a56572726f72a56d6f64656ca16d",
            "a56572726f7282a4636f6465ab6261645f7061796c6f6164a76d657373616765a178"
        ))
        .unwrap();
        let r: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.error_code(), Some(ErrorCode::BadPayload));
        assert!(r.outputs.is_empty());
    }
}

/// What the content-addressed cache stores under `<prefix>:cache:<model>:<version>:<digest>`:
/// the outputs of a successful run, reused for any job with the same inputs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CachedOutputs<'a> {
    pub v: u32,
    #[serde(borrow)]
    pub outputs: Vec<Tensor<'a>>,
}

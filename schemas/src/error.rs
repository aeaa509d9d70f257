//! Stable error codes and the typed error a job can fail with.

use serde::{Deserialize, Serialize};

/// The stable error codes of results. The string forms never change meaning.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be decoded as a job (not MessagePack, missing or mistyped
    /// fields, unknown schema version, bad job id, over the size limit).
    BadPayload,
    /// The job decoded but its inputs are wrong: data length, shape, dtype, count, or the
    /// subject's model token disagrees with the job's `model`.
    InvalidInput,
    /// No worker serves this model (or this version of it).
    UnknownModel,
    /// The deadline passed before the job reached a GPU.
    Expired,
    /// A bounded queue refused the job.
    Overloaded,
    /// The job alone does not fit the device (out of memory).
    ResourceExhausted,
    /// The job took down workers repeatedly.
    Poison,
    /// Anything else: a bug or an unexpected runtime failure.
    Internal,
}

impl ErrorCode {
    /// The wire string of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::UnknownModel => "unknown_model",
            ErrorCode::Expired => "expired",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Poison => "poison",
            ErrorCode::Internal => "internal",
        }
    }

    /// Permanent errors can never succeed on retry: the job is answered and terminated.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            ErrorCode::BadPayload
                | ErrorCode::InvalidInput
                | ErrorCode::UnknownModel
                | ErrorCode::Expired
                | ErrorCode::Poison
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed, as it is written into its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobError {
    pub code: ErrorCode,
    pub message: String,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
        }
    }
    pub fn bad_payload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadPayload, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
}

//! [`RegistrySnapshot`]: the declared models and versions, the one definition of "does the
//! registry declare this route" that the dispatcher checks each job against.

use std::collections::BTreeMap;

use crate::error::{ErrorCode, JobError};

/// The declared models and versions, as the dispatcher checks jobs against them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// Declared versions per model name. Empty: no registry (or an empty one), every
    /// route passes.
    pub models: BTreeMap<String, Vec<String>>,
}

impl RegistrySnapshot {
    /// Whether the registry declares anything (only then are jobs checked).
    pub fn is_active(&self) -> bool {
        !self.models.is_empty()
    }

    /// `Ok` when the registry is empty or declares `model` (and `version`, when the job
    /// named one); otherwise the `unknown_model` error to answer the job with.
    pub fn check(&self, model: &str, version: Option<&str>) -> Result<(), JobError> {
        if !self.is_active() {
            return Ok(());
        }
        let Some(versions) = self.models.get(model) else {
            return Err(JobError::new(
                ErrorCode::UnknownModel,
                format!("model {model:?} is not declared in the model registry"),
            ));
        };
        match version {
            Some(v) if !versions.iter().any(|d| d == v) => Err(JobError::new(
                ErrorCode::UnknownModel,
                format!(
                    "model {model:?} has no version {v:?} in the model registry (declared: {})",
                    versions.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }
}

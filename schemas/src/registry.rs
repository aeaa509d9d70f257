//! The model registry's values: what a model is declared to be (versions, files, input
//! specs, batching, placement, default version, traffic weights) and who changed it last.
//!
//! One [`ModelDecl`] is stored per model under the key `<name>` of the NATS KV bucket
//! [`REGISTRY_BUCKET`], as a MessagePack map like every other jetinfer message (written
//! with [`crate::encode`], read with [`decode_decl`]; unknown keys are ignored, so fields
//! can be added). docs/models.md describes the bucket and how to operate it.
//!
//! Weights are kept in hundredths ([`Weight`]) so that "0.01 precision" and "sums to 1"
//! are exact integer checks, never float comparisons.
//!
//! [`RegistrySnapshot`] is what the dispatcher checks jobs against: [`RegistrySnapshot::check`]
//! is the one definition of "does the registry declare this route".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{is_valid_model_name, is_valid_version};
use crate::tensor::DType;
use crate::worker::InputSpec;

mod snapshot;
mod weights;

pub use snapshot::RegistrySnapshot;
pub use weights::{format_weights, parse_weight, parse_weights};

/// The NATS KV bucket holding one [`ModelDecl`] per model, keyed by model name.
pub const REGISTRY_BUCKET: &str = "JETINFER_MODELS";

/// Revisions kept per key: the audit trail and what `rollback` can go back to (64 is the
/// most NATS KV allows).
pub const REGISTRY_HISTORY: i64 = 64;

/// Schema version of [`ModelDecl`].
pub const DECL_VERSION: u32 = 1;

/// A traffic weight in hundredths: 0..=100 stands for 0.00..=1.00.
pub type Weight = u16;

/// Everything the registry says about one model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelDecl {
    pub v: u32,
    pub name: String,
    /// The declared versions, in the order they were declared.
    pub versions: Vec<VersionDecl>,
    /// The version a job that names none falls back to: `default` gives it all the
    /// traffic; the dispatcher routes by `weights` (see [`crate::routing`]).
    pub default_version: String,
    /// Share of unversioned traffic per version, in hundredths, summing to 100: how the
    /// dispatcher routes jobs that name no version ([`crate::routing`]).
    pub weights: BTreeMap<String, Weight>,
    /// A `meta` field whose value routes a job (one user always sees one version) in place
    /// of its id; absent in values written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_key: Option<String>,
    /// Who made this revision, when, and what it changed.
    pub audit: Audit,
}

/// One declared version of a model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VersionDecl {
    pub version: String,
    /// TorchScript file, as workers reach it (a path on a directory every worker can see).
    pub path: String,
    /// Hex SHA-256 of the file (64 lowercase hex digits).
    pub sha256: String,
    /// The module and floating inputs are cast to this.
    pub dtype: DType,
    /// Per-sample input specs; `-1` marks a dynamic dimension.
    pub inputs: Vec<InputSpec>,
    pub batching: Batching,
    #[serde(default)]
    pub placement: Placement,
    /// Desired state: workers keep the version loaded (true, the default, also for values
    /// written before this field existed) or unload it (`jetinfer models unload`). An
    /// unloaded version stays declared: it can be loaded again without redeclaring it.
    #[serde(default = "loaded_default", skip_serializing_if = "is_loaded")]
    pub loaded: bool,
}

fn loaded_default() -> bool {
    true
}

fn is_loaded(loaded: &bool) -> bool {
    *loaded
}

impl VersionDecl {
    /// The same version with its desired state set to loaded: what two declarations of a
    /// version must agree on (`seed` compares files and settings, not load state).
    pub fn as_loaded(&self) -> VersionDecl {
        VersionDecl {
            loaded: true,
            ..self.clone()
        }
    }

    /// An example declaration of `version`, for tests and docs: file `/m/<version>.pt`
    /// (a made-up sha256), one f32 input of shape `[4]`, batches of up to 8 jobs formed
    /// within 2 ms, no placement, loaded. Tests change what they need with struct-update
    /// syntax (`VersionDecl { loaded: false, ..VersionDecl::example("2") }`).
    #[doc(hidden)]
    pub fn example(version: &str) -> VersionDecl {
        VersionDecl {
            version: version.into(),
            path: format!("/m/{version}.pt"),
            sha256: "ab".repeat(32),
            dtype: DType::F32,
            inputs: vec![InputSpec {
                dtype: DType::F32,
                shape: vec![4],
            }],
            batching: Batching {
                max_batch_size: 8,
                max_queue_delay_ms: 2,
                linger_ms: 0,
                pad: None,
                shape_buckets: false,
                warm_lengths: vec![],
            },
            placement: Placement::default(),
            loaded: true,
        }
    }
}

/// Batching settings of a version, as in the worker's models file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Batching {
    pub max_batch_size: u32,
    pub max_queue_delay_ms: u64,
    /// How long a batch waits for company on an idle device (0: none; see the worker's
    /// models file, `linger_ms`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub linger_ms: u64,
    /// One pad value per input (absent: only equal shapes batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<Vec<i64>>,
    #[serde(default)]
    pub shape_buckets: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_lengths: Vec<i64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Where a version is meant to run. Empty lists mean "anywhere".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Placement {
    /// Worker ids.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Devices: `cpu`, `cuda:N`.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Who changed a declaration, when, and what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// The operator (the CLI's `--by`, default `$USER@host`).
    pub by: String,
    /// Unix ms.
    pub at_ms: u64,
    /// One line: what this revision changed (`declare version 2`, `weights 1=0.90,2=0.10`).
    pub change: String,
}

/// Why a declaration or an operator's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("model name {0:?} is not 1..=64 bytes of [A-Za-z0-9_-]")]
    Name(String),
    #[error("model {0}: no versions declared")]
    NoVersions(String),
    #[error("model {model}: version {version:?} is not 1..=64 bytes of [A-Za-z0-9._-]")]
    Version { model: String, version: String },
    #[error("model {model}: version {version} is declared twice")]
    DuplicateVersion { model: String, version: String },
    #[error("model {model} version {version}: {what}")]
    Field {
        model: String,
        version: String,
        what: &'static str,
    },
    #[error("model {model}: {what} names version {version}, which is not declared")]
    Undeclared {
        model: String,
        version: String,
        what: &'static str,
    },
    #[error("weight {0:?} is not a number in 0..=1 with at most two decimals")]
    Weight(String),
    #[error("weights {0:?}: expected version=weight pairs separated by commas")]
    WeightsSyntax(String),
    #[error("sticky key {0:?} is not 1..=64 bytes of a meta field name")]
    StickyKey(String),
    #[error("model {model}: weights sum to {sum_hundredths}/100, not 1")]
    WeightsSum { model: String, sum_hundredths: u32 },
    #[error("registry value is not a model declaration: {0}")]
    Decode(String),
    #[error("registry value has schema version {0}, this build reads {DECL_VERSION}")]
    SchemaVersion(u32),
}

impl ModelDecl {
    /// Checks every rule of a declaration (names, unique versions, files, specs, default
    /// version and weights declared, weights summing to 1).
    pub fn validate(&self) -> Result<(), RegistryError> {
        if !is_valid_model_name(&self.name) {
            return Err(RegistryError::Name(self.name.clone()));
        }
        if self.versions.is_empty() {
            return Err(RegistryError::NoVersions(self.name.clone()));
        }
        for (i, v) in self.versions.iter().enumerate() {
            v.validate(&self.name)?;
            if self.versions[..i].iter().any(|o| o.version == v.version) {
                return Err(RegistryError::DuplicateVersion {
                    model: self.name.clone(),
                    version: v.version.clone(),
                });
            }
        }
        let undeclared = |version: &str, what| RegistryError::Undeclared {
            model: self.name.clone(),
            version: version.to_string(),
            what,
        };
        if self.version(&self.default_version).is_none() {
            return Err(undeclared(&self.default_version, "the default version"));
        }
        for (version, w) in &self.weights {
            if self.version(version).is_none() {
                return Err(undeclared(version, "a weight"));
            }
            if *w > 100 {
                return Err(RegistryError::Weight(format!("{w}/100")));
            }
        }
        if let Some(key) = &self.sticky_key {
            if !is_valid_sticky_key(key) {
                return Err(RegistryError::StickyKey(key.clone()));
            }
        }
        let sum: u32 = self.weights.values().map(|w| u32::from(*w)).sum();
        if sum != 100 {
            return Err(RegistryError::WeightsSum {
                model: self.name.clone(),
                sum_hundredths: sum,
            });
        }
        Ok(())
    }

    /// The declared version `version`, if any.
    pub fn version(&self, version: &str) -> Option<&VersionDecl> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The declared version strings, in declaration order.
    pub fn version_names(&self) -> Vec<&str> {
        self.versions.iter().map(|v| v.version.as_str()).collect()
    }
}

impl VersionDecl {
    fn validate(&self, model: &str) -> Result<(), RegistryError> {
        if !is_valid_version(&self.version) {
            return Err(RegistryError::Version {
                model: model.to_string(),
                version: self.version.clone(),
            });
        }
        let field = |what| RegistryError::Field {
            model: model.to_string(),
            version: self.version.clone(),
            what,
        };
        if self.path.is_empty() {
            return Err(field("path is empty"));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(field("sha256 must be 64 lowercase hex digits"));
        }
        if self.inputs.is_empty() {
            return Err(field("inputs must list at least one input"));
        }
        if self.batching.max_batch_size < 1 {
            return Err(field("max_batch_size must be at least 1"));
        }
        if self
            .batching
            .pad
            .as_ref()
            .is_some_and(|p| p.len() != self.inputs.len())
        {
            return Err(field("pad needs one value per input"));
        }
        Ok(())
    }
}

/// Whether `key` can name a sticky `meta` field: 1..=64 bytes, no control characters.
pub fn is_valid_sticky_key(key: &str) -> bool {
    (1..=64).contains(&key.len()) && !key.chars().any(char::is_control)
}

/// Reads a registry value written by [`crate::encode`] and validates it.
pub fn decode_decl(bytes: &[u8]) -> Result<ModelDecl, RegistryError> {
    let decl: ModelDecl =
        rmp_serde::from_slice(bytes).map_err(|e| RegistryError::Decode(e.to_string()))?;
    if decl.v != DECL_VERSION {
        return Err(RegistryError::SchemaVersion(decl.v));
    }
    decl.validate()?;
    Ok(decl)
}

#[cfg(test)]
pub(crate) mod tests;

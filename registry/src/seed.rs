//! Seeding: the declarations a worker's models TOML file implies, written to the registry
//! idempotently (`jetinfer models seed --from models.toml`).
//!
//! Entries with one name form one model; entries with one name and version on several
//! devices form one version placed on those devices. Model paths are resolved against the
//! file's folder and stored absolute (a path every worker must reach); a missing `sha256`
//! is computed from the file. The first version listed becomes the default with all the
//! traffic. Seeding again adds versions the registry lacks and changes nothing else; a
//! listed version whose declaration differs from the registry's is refused (a version's
//! file never changes under the same version string: declare a new version), and then
//! nothing is written.

use std::io::Read;
use std::path::{Path, PathBuf};

use jetinfer_schemas::registry::{Audit, Batching, ModelDecl, Placement, VersionDecl};
use jetinfer_schemas::worker::InputSpec;
use jetinfer_schemas::DType;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{edit, Registry, RegistryError, StoreError};

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("models file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("models file lists model {model} version {version} twice with different settings")]
    Inconsistent { model: String, version: String },
    #[error("model {model} version {version} in the file differs from the registry's declaration; declare a new version instead")]
    Differs { model: String, version: String },
    #[error(transparent)]
    Invalid(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What seeding did to one model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "versions")]
pub enum Outcome {
    /// The model was not declared: declared with every version the file lists.
    Created(Vec<String>),
    /// These versions were added to the model's declaration.
    Added(Vec<String>),
    /// Everything the file lists was already declared, identically.
    Unchanged,
}

/// One `[[models]]` entry: the worker's format (worker/src/config.rs). Unknown keys are
/// ignored here; the worker refuses them when it loads the file.
#[derive(Deserialize)]
struct Entry {
    name: String,
    version: String,
    path: PathBuf,
    sha256: Option<String>,
    #[serde(default = "cpu")]
    device: String,
    #[serde(default = "f32")]
    dtype: DType,
    max_batch_size: u32,
    #[serde(default = "two_ms")]
    max_queue_delay_ms: u64,
    #[serde(default)]
    linger_ms: u64,
    inputs: Vec<InputSpec>,
    #[serde(default)]
    pad: Option<Vec<i64>>,
    #[serde(default)]
    shape_buckets: bool,
    #[serde(default)]
    warm_lengths: Vec<i64>,
}

#[derive(Deserialize)]
struct File {
    models: Vec<Entry>,
}

fn cpu() -> String {
    "cpu".into()
}
fn f32() -> DType {
    DType::F32
}
fn two_ms() -> u64 {
    2
}

/// The declarations `path` implies, each stamped with `audit`, in file order.
pub fn declarations(path: &Path, audit: &Audit) -> Result<Vec<ModelDecl>, SeedError> {
    let read = |source| SeedError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file: File = toml::from_str(&text).map_err(|source| SeedError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = std::path::absolute(path)
        .map_err(read)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut decls: Vec<ModelDecl> = Vec::new();
    for e in file.models {
        let model_path = dir.join(&e.path);
        let sha256 = match e.sha256 {
            Some(s) => s.to_ascii_lowercase(),
            None => sha256_of(&model_path)?,
        };
        let version = VersionDecl {
            version: e.version.clone(),
            path: model_path.to_string_lossy().into_owned(),
            sha256,
            dtype: e.dtype,
            inputs: e.inputs,
            batching: Batching {
                max_batch_size: e.max_batch_size,
                max_queue_delay_ms: e.max_queue_delay_ms,
                linger_ms: e.linger_ms,
                pad: e.pad,
                shape_buckets: e.shape_buckets,
                warm_lengths: e.warm_lengths,
            },
            placement: Placement {
                workers: vec![],
                devices: vec![e.device.clone()],
            },
            loaded: true,
        };
        let audit = Audit {
            change: format!("seed from {}", path.display()),
            ..audit.clone()
        };
        match decls.iter_mut().find(|d| d.name == e.name) {
            None => decls.push(edit::new_model(&e.name, version, audit)?),
            Some(decl) => merge(decl, version)?,
        }
    }
    Ok(decls)
}

/// Adds `version` to `decl`, or its device to the same version listed before.
fn merge(decl: &mut ModelDecl, version: VersionDecl) -> Result<(), SeedError> {
    let Some(known) = decl
        .versions
        .iter_mut()
        .find(|v| v.version == version.version)
    else {
        return Ok(edit::add_version(decl, version)?);
    };
    let same_but_device = VersionDecl {
        placement: known.placement.clone(),
        loaded: known.loaded,
        ..version.clone()
    };
    if *known != same_but_device {
        return Err(SeedError::Inconsistent {
            model: decl.name.clone(),
            version: version.version,
        });
    }
    for d in version.placement.devices {
        if !known.placement.devices.contains(&d) {
            known.placement.devices.push(d);
        }
    }
    Ok(())
}

/// Writes `decls` to the registry: creates undeclared models, adds missing versions to
/// declared ones, and writes nothing at all when a listed version differs.
pub async fn seed(
    registry: &Registry,
    decls: Vec<ModelDecl>,
) -> Result<Vec<(String, Outcome)>, SeedError> {
    // Plan first, so a refusal leaves the registry untouched.
    let mut plan = Vec::with_capacity(decls.len());
    for decl in decls {
        let current = registry.get(&decl.name).await?;
        let missing = match &current {
            None => decl.versions.clone(),
            Some(stored) => {
                let mut missing = Vec::new();
                for v in &decl.versions {
                    match stored.decl.version(&v.version) {
                        // An unloaded version is still the same version.
                        Some(declared) if declared.as_loaded() == *v => {}
                        Some(_) => {
                            return Err(SeedError::Differs {
                                model: decl.name.clone(),
                                version: v.version.clone(),
                            })
                        }
                        None => missing.push(v.clone()),
                    }
                }
                missing
            }
        };
        plan.push((decl, current, missing));
    }
    let mut out = Vec::with_capacity(plan.len());
    for (decl, current, missing) in plan {
        let names: Vec<String> = missing.iter().map(|v| v.version.clone()).collect();
        let outcome = match current {
            None => {
                registry.create(&decl).await?;
                Outcome::Created(names)
            }
            Some(_) if missing.is_empty() => Outcome::Unchanged,
            Some(stored) => {
                let mut next = stored.decl;
                for v in missing {
                    edit::add_version(&mut next, v)?;
                }
                next.audit = Audit {
                    change: format!("{}: add version {}", decl.audit.change, names.join(", ")),
                    ..decl.audit.clone()
                };
                registry.update(&next, stored.revision).await?;
                Outcome::Added(names)
            }
        };
        out.push((decl.name, outcome));
    }
    Ok(out)
}

/// Hex SHA-256 of a file.
pub fn sha256_of(path: &Path) -> Result<String, SeedError> {
    let read = |source| SeedError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> Audit {
        Audit {
            by: "t".into(),
            at_ms: 1,
            change: String::new(),
        }
    }

    #[test]
    fn a_file_becomes_one_declaration_per_model_with_devices_merged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.pt"), b"model bytes").unwrap();
        let toml = r#"
[[models]]
name = "a"
version = "1"
path = "a.pt"
sha256 = "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
device = "cuda:0"
max_batch_size = 8
inputs = [{ dtype = "f32", shape = [16] }]

[[models]]
name = "a"
version = "1"
path = "a.pt"
sha256 = "abababababababababababababababababababababababababababababababab"
device = "cuda:1"
max_batch_size = 8
inputs = [{ dtype = "f32", shape = [16] }]

[[models]]
name = "a"
version = "2"
path = "a2.pt"
sha256 = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
max_batch_size = 4
inputs = [{ dtype = "f32", shape = [16] }]

[[models]]
name = "b"
version = "1"
path = "b.pt"
max_batch_size = 2
pad = [0]
inputs = [{ dtype = "i64", shape = [-1] }]
"#;
        let file = dir.path().join("models.toml");
        std::fs::write(&file, toml).unwrap();
        let decls = declarations(&file, &audit()).unwrap();
        assert_eq!(decls.len(), 2);
        let a = &decls[0];
        assert_eq!(a.version_names(), ["1", "2"]);
        assert_eq!(a.default_version, "1");
        assert_eq!(a.versions[0].placement.devices, ["cuda:0", "cuda:1"]);
        assert_eq!(a.versions[1].placement.devices, ["cpu"]);
        assert!(Path::new(&a.versions[0].path).is_absolute());
        let b = &decls[1];
        assert_eq!(
            b.versions[0].sha256,
            sha256_of(&dir.path().join("b.pt")).unwrap()
        );
        assert_eq!(b.versions[0].batching.pad, Some(vec![0]));

        std::fs::write(
            &file,
            toml.replacen("max_batch_size = 8", "max_batch_size = 9", 1),
        )
        .unwrap();
        assert!(matches!(
            declarations(&file, &audit()),
            Err(SeedError::Inconsistent { .. })
        ));
        std::fs::write(&file, toml.replace("b.pt", "absent.pt")).unwrap();
        assert!(matches!(
            declarations(&file, &audit()),
            Err(SeedError::Read { .. })
        ));
        std::fs::write(&file, "[[models]]\nname = 3\n").unwrap();
        assert!(matches!(
            declarations(&file, &audit()),
            Err(SeedError::Parse { .. })
        ));
    }
}

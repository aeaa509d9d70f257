//! Golden data exported by `models/export.py`: known inputs and the outputs the reference
//! (eager PyTorch) model produced for them, used by the demo and the tests to check that
//! results coming back through the whole pipeline are right.
//!
//! Layout under the export folder (usually `models/out`):
//!
//! ```text
//! golden.json = {"models": [{"name": "mlp", "version": "1", "sets": [
//!     {"inputs": ["golden/mlp/set0/input_0.npy"], "outputs": ["golden/mlp/set0/output_0.npy"],
//!      "samples": 64}]}]}
//! ```
//!
//! Paths are relative to the folder; every `.npy` has a leading sample dimension N, which
//! [`Golden::load`] removes so that each [`Sample`] is one job's inputs and outputs.
//! A model has several sets when its samples differ in shape (dynamic dimensions).

mod compare;
mod split;

use std::path::{Path, PathBuf};

use jetinfer_schemas::Tensor;
use serde::Deserialize;

use crate::npy::{self, NpyError};

pub use compare::{compare, Mismatch};
pub use split::{split_batch, SplitError};

/// The manifest's file name inside the export folder.
pub const MANIFEST: &str = "golden.json";

/// Why golden data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("cannot read {path}: {source} (run models/export.py first?)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid golden manifest: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Npy { path: PathBuf, source: NpyError },
    /// The files disagree with the manifest or with each other.
    #[error("golden data of {model}: {message}")]
    Inconsistent { model: String, message: String },
}

/// One job's worth of golden data: its inputs and the expected outputs (no batch dim).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub inputs: Vec<Tensor<'static>>,
    pub outputs: Vec<Tensor<'static>>,
}

/// The golden samples of one model.
#[derive(Debug, Clone)]
pub struct GoldenModel {
    pub name: String,
    pub version: String,
    /// Every set's samples, set after set.
    pub samples: Vec<Sample>,
}

/// All golden data of an export folder, loaded into memory (it is small).
#[derive(Debug, Clone)]
pub struct Golden {
    dir: PathBuf,
    models: Vec<GoldenModel>,
}

#[derive(Deserialize)]
struct Manifest {
    models: Vec<ManifestModel>,
}

#[derive(Deserialize)]
struct ManifestModel {
    name: String,
    #[serde(deserialize_with = "string_or_number")]
    version: String,
    sets: Vec<ManifestSet>,
}

#[derive(Deserialize)]
struct ManifestSet {
    inputs: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
    samples: usize,
}

/// Versions are strings, but a hand-written manifest may say `"version": 1`.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "version must be a string, got {other}"
        ))),
    }
}

impl Golden {
    /// Reads `<dir>/golden.json` and every `.npy` it names, and splits them into samples.
    pub fn load(dir: impl AsRef<Path>) -> Result<Golden, GoldenError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|source| GoldenError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|source| GoldenError::Manifest { path, source })?;
        let models = manifest
            .models
            .into_iter()
            .map(|m| load_model(&dir, m))
            .collect::<Result<_, _>>()?;
        Ok(Golden { dir, models })
    }

    /// The export folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every model, in manifest order.
    pub fn models(&self) -> &[GoldenModel] {
        &self.models
    }

    /// One model's golden data.
    pub fn model(&self, name: &str) -> Option<&GoldenModel> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The samples of a model (a copy), empty when the manifest does not name it.
    pub fn samples(&self, model: &str) -> Vec<Sample> {
        self.model(model)
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    }
}

fn load_model(dir: &Path, m: ManifestModel) -> Result<GoldenModel, GoldenError> {
    let inconsistent = |message: String| GoldenError::Inconsistent {
        model: m.name.clone(),
        message,
    };
    let mut samples = Vec::new();
    for (set_index, set) in m.sets.iter().enumerate() {
        let read_all = |paths: &[PathBuf]| -> Result<Vec<Vec<Tensor<'static>>>, GoldenError> {
            paths
                .iter()
                .map(|rel| {
                    let path = dir.join(rel);
                    let batch = npy::read(&path).map_err(|source| GoldenError::Npy {
                        path: path.clone(),
                        source,
                    })?;
                    split_batch(&batch)
                        .map_err(|message| inconsistent(format!("{}: {message}", rel.display())))
                })
                .collect()
        };
        let inputs = read_all(&set.inputs)?;
        let outputs = read_all(&set.outputs)?;
        if inputs.is_empty() {
            return Err(inconsistent(format!("set {set_index} has no inputs")));
        }
        if let Some(bad) = inputs
            .iter()
            .chain(&outputs)
            .find(|per_sample| per_sample.len() != set.samples)
        {
            return Err(inconsistent(format!(
                "set {set_index} says {} samples, a file holds {}",
                set.samples,
                bad.len()
            )));
        }
        for n in 0..set.samples {
            samples.push(Sample {
                inputs: inputs.iter().map(|t| t[n].clone()).collect(),
                outputs: outputs.iter().map(|t| t[n].clone()).collect(),
            });
        }
    }
    Ok(GoldenModel {
        name: m.name,
        version: m.version,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor<'static> {
        Tensor::from_f32(shape, v)
    }

    #[test]
    fn load_reads_the_manifest_and_splits_samples() {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("golden/pair/set0");
        std::fs::create_dir_all(&set).unwrap();
        npy::write(
            set.join("input_0.npy"),
            &f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]),
        )
        .unwrap();
        npy::write(
            set.join("input_1.npy"),
            &Tensor::owned(DType::U8, vec![2, 1], vec![7, 8]),
        )
        .unwrap();
        npy::write(set.join("output_0.npy"), &f32s(vec![2, 1], &[0.5, 0.25])).unwrap();
        let manifest = r#"{"models": [{"name": "pair", "version": 1, "extra": true, "sets": [
            {"inputs": ["golden/pair/set0/input_0.npy", "golden/pair/set0/input_1.npy"],
             "outputs": ["golden/pair/set0/output_0.npy"], "samples": 2}]}]}"#;
        std::fs::write(dir.path().join(MANIFEST), manifest).unwrap();

        let golden = Golden::load(dir.path()).unwrap();
        assert_eq!(golden.models()[0].version, "1");
        let samples = golden.samples("pair");
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[1].inputs,
            vec![
                f32s(vec![2], &[3.0, 4.0]),
                Tensor::owned(DType::U8, vec![1], vec![8])
            ]
        );
        assert_eq!(samples[1].outputs, vec![f32s(vec![1], &[0.25])]);
        assert!(golden.samples("nope").is_empty());

        std::fs::write(
            dir.path().join(MANIFEST),
            manifest.replace("\"samples\": 2", "\"samples\": 3"),
        )
        .unwrap();
        assert!(matches!(
            Golden::load(dir.path()),
            Err(GoldenError::Inconsistent { .. })
        ));
        std::fs::remove_file(set.join("output_0.npy")).unwrap();
        assert!(matches!(
            Golden::load(dir.path()),
            Err(GoldenError::Npy { .. })
        ));
        assert!(matches!(
            Golden::load(dir.path().join("missing")),
            Err(GoldenError::Io { .. })
        ));
    }
}

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

use std::path::{Path, PathBuf};

use jetinfer_schemas::Tensor;
use serde::Deserialize;

use crate::npy::{self, NpyError};

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

/// Why a tensor does not split into samples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("a scalar has no sample dimension")]
    Scalar,
    #[error("negative sample dimension {0}")]
    Negative(i64),
    #[error("sample shape overflows")]
    Overflow,
    #[error("{bytes} data bytes do not hold {n} samples of {sample_bytes}")]
    Size {
        bytes: usize,
        n: usize,
        sample_bytes: usize,
    },
}

/// Why outputs do not match the expected ones.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected {expected} outputs, got {got}")]
    Count { expected: usize, got: usize },
    #[error("output {output}: shape {got:?}, expected {expected:?}")]
    Shape {
        output: usize,
        got: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error(
        "output {output}: {got} values, expected {expected} (data length does not match the shape)"
    )]
    Length {
        output: usize,
        got: usize,
        expected: usize,
    },
    #[error("output {output}: {wrong} of {count} values differ (first at {first}: got {got}, expected {expected}; max |diff| {max_diff}; atol {atol}, rtol {rtol})")]
    Values {
        output: usize,
        wrong: usize,
        count: usize,
        first: usize,
        got: f32,
        expected: f32,
        max_diff: f32,
        atol: f32,
        rtol: f32,
    },
}

/// Splits a tensor along its first dimension into one owned tensor per sample.
pub fn split_batch(batch: &Tensor<'_>) -> Result<Vec<Tensor<'static>>, SplitError> {
    let (&n, sample_shape) = batch.shape.split_first().ok_or(SplitError::Scalar)?;
    let n = usize::try_from(n).map_err(|_| SplitError::Negative(n))?;
    let sample = Tensor {
        dtype: batch.dtype,
        shape: sample_shape.to_vec(),
        data: Vec::new().into(),
    };
    let sample_bytes =
        sample.element_count().ok_or(SplitError::Overflow)? as usize * batch.dtype.size();
    if sample_bytes.checked_mul(n) != Some(batch.data.len()) {
        return Err(SplitError::Size {
            bytes: batch.data.len(),
            n,
            sample_bytes,
        });
    }
    if sample_bytes == 0 {
        return Ok(vec![sample; n]);
    }
    Ok(batch
        .data
        .chunks_exact(sample_bytes)
        .map(|c| Tensor {
            data: c.to_vec().into(),
            ..sample.clone()
        })
        .collect())
}

/// Checks outputs against expected ones: same count, same shapes, and every value within
/// `atol + rtol * |expected|` (NaN matches only NaN, infinities only themselves).
/// Dtypes may differ (an f16 model returns f16); values are compared as f32.
pub fn compare(
    expected: &[Tensor<'_>],
    got: &[Tensor<'_>],
    atol: f32,
    rtol: f32,
) -> Result<(), Mismatch> {
    if expected.len() != got.len() {
        return Err(Mismatch::Count {
            expected: expected.len(),
            got: got.len(),
        });
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.shape != g.shape {
            return Err(Mismatch::Shape {
                output: i,
                got: g.shape.clone(),
                expected: e.shape.clone(),
            });
        }
        let (ev, gv) = (e.to_f32_vec(), g.to_f32_vec());
        if ev.len() != gv.len() {
            return Err(Mismatch::Length {
                output: i,
                got: gv.len(),
                expected: ev.len(),
            });
        }
        let mut wrong = 0usize;
        let mut first = None;
        let mut max_diff = 0f32;
        for (k, (&a, &b)) in ev.iter().zip(&gv).enumerate() {
            let close = if a.is_nan() || b.is_nan() {
                a.is_nan() && b.is_nan()
            } else if a.is_infinite() || b.is_infinite() {
                a == b
            } else {
                let diff = (a - b).abs();
                max_diff = max_diff.max(diff);
                diff <= atol + rtol * a.abs()
            };
            if !close {
                wrong += 1;
                first.get_or_insert(k);
            }
        }
        if let Some(k) = first {
            return Err(Mismatch::Values {
                output: i,
                wrong,
                count: ev.len(),
                first: k,
                got: gv[k],
                expected: ev[k],
                max_diff,
                atol,
                rtol,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor<'static> {
        Tensor::from_f32(shape, v)
    }

    #[test]
    fn compare_uses_absolute_and_relative_tolerance() {
        let e = [f32s(vec![3], &[0.0, 100.0, -1.0])];
        assert!(compare(&e, &e, 0.0, 0.0).is_ok());
        // 0.0 vs 5e-5: within atol 1e-4; 100 vs 100.09: within rtol 1e-3 (0.1 + 1e-4).
        assert!(compare(&e, &[f32s(vec![3], &[5e-5, 100.09, -1.0])], 1e-4, 1e-3).is_ok());
        let err = compare(&e, &[f32s(vec![3], &[5e-5, 100.2, -1.01])], 1e-4, 1e-3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 of 3 values differ (first at 1"), "{err}");
        // rtol scales with the expected value, not the received one.
        assert!(compare(&[f32s(vec![1], &[1.0])], &[f32s(vec![1], &[1.5])], 0.0, 0.4).is_err());
    }

    #[test]
    fn compare_checks_count_shape_and_special_values() {
        let e = [f32s(vec![2], &[1.0, 2.0])];
        assert!(compare(&e, &[], 1.0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("expected 1 outputs, got 0"));
        assert!(compare(&e, &[f32s(vec![2, 1], &[1.0, 2.0])], 1.0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("shape"));
        let nan = [f32s(vec![2], &[f32::NAN, f32::INFINITY])];
        assert!(compare(&nan, &nan, 0.0, 0.0).is_ok());
        assert!(compare(&nan, &[f32s(vec![2], &[0.0, f32::INFINITY])], 1e9, 1e9).is_err());
        assert!(compare(&nan, &[f32s(vec![2], &[f32::NAN, f32::MAX])], 1e9, 1e9).is_err());
        // An f16 result is compared by value: 0x3c00 is 1.0.
        let half = [Tensor::owned(DType::F16, vec![1], vec![0x00, 0x3c])];
        assert!(compare(&[f32s(vec![1], &[1.0])], &half, 0.0, 0.0).is_ok());
    }

    #[test]
    fn split_batch_removes_the_first_dimension() {
        let batch = f32s(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let samples = split_batch(&batch).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2], f32s(vec![2], &[5.0, 6.0]));
        let per_sample_scalars = split_batch(&f32s(vec![2], &[7.0, 8.0])).unwrap();
        assert_eq!(per_sample_scalars[1], f32s(vec![], &[8.0]));
        assert!(split_batch(&f32s(vec![], &[1.0])).is_err());
        assert!(split_batch(&Tensor::owned(DType::U8, vec![2, 2], vec![0; 3])).is_err());
        assert_eq!(
            split_batch(&Tensor::owned(DType::U8, vec![2, 0], vec![]))
                .unwrap()
                .len(),
            2
        );
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

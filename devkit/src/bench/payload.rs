//! Job payloads for the load generator, made from a model's input spec in the models TOML
//! (the same file the workers load), so a benchmark needs no sample data.
//!
//! A small pool of random samples is made once and cycled: generating 150 KB of random
//! bytes per image job would cost the load generator more than the pipeline under test.
//! Every job is sent with `cache: false`, so the result cache never answers a repeated
//! sample.

use std::path::Path;

use jetinfer_schemas::worker::InputSpec;
use jetinfer_schemas::{DType, Tensor};
use rand::Rng;
use serde::Deserialize;

use super::BenchError;

/// The part of a `[[models]]` entry the benchmark needs (other keys are ignored).
#[derive(Deserialize, Debug, Clone)]
pub struct BenchModel {
    pub name: String,
    pub max_batch_size: u32,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    pub inputs: Vec<InputSpec>,
}

#[derive(Deserialize)]
struct File {
    models: Vec<BenchModel>,
}

/// Reads model `name` from a models TOML file.
pub fn load_model(path: &Path, name: &str) -> Result<BenchModel, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::ReadModels {
        path: path.to_path_buf(),
        source,
    })?;
    let file: File = toml::from_str(&text).map_err(|source| BenchError::ParseModels {
        path: path.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = file.models.iter().map(|m| m.name.clone()).collect();
    file.models
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| BenchError::UnknownModel {
            name: name.to_string(),
            path: path.to_path_buf(),
            known: names.join(", "),
        })
}

/// How dynamic dimensions (`-1`) and integer inputs are filled.
#[derive(Debug, Clone, Copy)]
pub struct PayloadOptions {
    /// Dynamic dimensions get a length drawn uniformly from this range (inclusive).
    pub dyn_len: (i64, i64),
    /// Integer inputs get values in `1..int_max` (never 0, so a 0 can mean padding).
    pub int_max: i64,
    /// How many distinct samples to make and cycle.
    pub pool: usize,
}

/// Makes `opts.pool` random samples for `model`. Within one sample every dynamic dimension
/// has the same length (token ids and attention mask must agree).
pub fn make_pool(model: &BenchModel, opts: &PayloadOptions) -> Vec<Vec<Tensor<'static>>> {
    let mut rng = rand::rng();
    (0..opts.pool.max(1))
        .map(|_| {
            let len =
                rng.random_range(opts.dyn_len.0.max(1)..=opts.dyn_len.1.max(opts.dyn_len.0.max(1)));
            model
                .inputs
                .iter()
                .map(|spec| {
                    let shape: Vec<i64> = spec
                        .shape
                        .iter()
                        .map(|&d| if d < 0 { len } else { d })
                        .collect();
                    let count: i64 = shape.iter().product();
                    Tensor::owned(
                        spec.dtype,
                        shape,
                        random_bytes(spec.dtype, count as usize, opts.int_max, &mut rng),
                    )
                })
                .collect()
        })
        .collect()
}

fn random_bytes(dtype: DType, count: usize, int_max: i64, rng: &mut impl Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * dtype.size());
    let int_max = int_max.max(2);
    for _ in 0..count {
        match dtype {
            DType::F32 => out.extend_from_slice(&rng.random_range(-1.0f32..1.0).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&rng.random_range(-1.0f64..1.0).to_le_bytes()),
            // Half types: a value in [-1, 1) through its f32 bit pattern's top half (bf16)
            // or a small exponent-limited f16 pattern; the exact values do not matter.
            DType::Bf16 => {
                let bits = rng.random_range(-1.0f32..1.0).to_bits();
                out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes())
            }
            DType::F16 => {
                let mantissa: u16 = rng.random_range(0..1024);
                let sign: u16 = if rng.random_bool(0.5) { 0x8000 } else { 0 };
                // Exponent 14 → values in [0.5, 1).
                out.extend_from_slice(&(sign | (14 << 10) | mantissa).to_le_bytes())
            }
            DType::I64 => out.extend_from_slice(&rng.random_range(1..int_max).to_le_bytes()),
            DType::I32 => {
                out.extend_from_slice(&(rng.random_range(1..int_max) as i32).to_le_bytes())
            }
            DType::I16 => out.extend_from_slice(
                &(rng.random_range(1..int_max.min(i16::MAX as i64)) as i16).to_le_bytes(),
            ),
            DType::I8 => out.push(rng.random_range(1..int_max.min(127)) as u8),
            DType::U8 => out.push(rng.random::<u8>()),
            DType::Bool => out.push(1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_spec_with_one_length_per_sample() {
        let model = BenchModel {
            name: "m".into(),
            max_batch_size: 4,
            dtype: None,
            device: None,
            inputs: vec![
                InputSpec {
                    dtype: DType::I64,
                    shape: vec![-1],
                },
                InputSpec {
                    dtype: DType::I64,
                    shape: vec![-1],
                },
                InputSpec {
                    dtype: DType::U8,
                    shape: vec![3, 2],
                },
            ],
        };
        let opts = PayloadOptions {
            dyn_len: (5, 9),
            int_max: 50,
            pool: 8,
        };
        let pool = make_pool(&model, &opts);
        assert_eq!(pool.len(), 8);
        for s in &pool {
            assert_eq!(s[0].shape, s[1].shape);
            assert!((5..=9).contains(&s[0].shape[0]));
            assert_eq!(s[0].data.len(), s[0].shape[0] as usize * 8);
            assert_eq!(s[2].shape, vec![3, 2]);
            assert_eq!(s[2].data.len(), 6);
            let ids = s[0].to_f32_vec();
            assert!(ids.iter().all(|&v| (1.0..50.0).contains(&v)), "{ids:?}");
        }
    }
}

//! Padding variable-length jobs into one batch.
//!
//! A model with a `pad` entry in the models TOML (one value per input, e.g. `pad = [0, 0]`
//! for token ids and attention mask) has each batch padded to its longest job: every
//! dimension is grown to the batch's largest size along it, filled with that input's pad
//! value. Jobs of different lengths then batch together instead of one batch per length.
//! Without `pad`, jobs stack only with identical shapes (the batcher groups them so).
//! Only models whose outputs do not depend on the padded length (pooled embeddings,
//! masked by the attention mask) should be padded: outputs are split per job as they
//! come out.
//!
//! Shape buckets ([`crate::buckets`]) round a batch up by repeating its first job and
//! round padded lengths up; the bytes are written by [`fill`], on the device path straight
//! into the pinned buffer of [`crate::staging`].

use jetinfer_schemas::{DType, Tensor};

use crate::buckets::{bucket, LENGTH_MULTIPLE};
use crate::config::ModelConfig;

/// The batch shape (rows, then the per-job target shape) and the bytes of one job.
pub(crate) fn plan(
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    pad: Option<i64>,
    config: &ModelConfig,
) -> (Vec<i64>, usize) {
    let first = &jobs[0][i];
    let mut target = first.shape.clone();
    if pad.is_some() {
        for job in jobs {
            for (t, &d) in target.iter_mut().zip(&job[i].shape) {
                *t = (*t).max(d);
            }
        }
        if config.shape_buckets {
            for (t, spec) in target.iter_mut().zip(&config.inputs[i].shape) {
                if *spec < 0 {
                    *t = (*t + LENGTH_MULTIPLE - 1) / LENGTH_MULTIPLE * LENGTH_MULTIPLE;
                }
            }
        }
    }
    let rows = bucket(
        jobs.len(),
        config.max_batch_size as usize,
        config.shape_buckets,
    );
    let mut shape = Vec::with_capacity(target.len() + 1);
    shape.push(rows as i64);
    shape.extend_from_slice(&target);
    let per_job = target.iter().product::<i64>() as usize * first.dtype.size();
    (shape, per_job)
}

/// Writes the jobs' input `i` into `buf` (rows × `per_job` bytes): each job padded to the
/// target shape, the rows beyond the jobs filled with copies of the first job.
pub(crate) fn fill(
    buf: &mut [u8],
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    pad: Option<i64>,
    shape: &[i64],
    per_job: usize,
) {
    let target = &shape[1..];
    let dtype = jobs[0][i].dtype;
    let fill = pad_bytes(dtype, pad.unwrap_or(0));
    for (j, job) in jobs.iter().enumerate() {
        let dst = &mut buf[j * per_job..(j + 1) * per_job];
        let t = &job[i];
        if t.shape == target {
            dst.copy_from_slice(&t.data);
        } else {
            for chunk in dst.chunks_exact_mut(fill.len()) {
                chunk.copy_from_slice(&fill);
            }
            copy_into(dst, &t.data, &t.shape, target, dtype.size());
        }
    }
    let rows = shape[0] as usize;
    for j in jobs.len()..rows {
        buf.copy_within(0..per_job, j * per_job);
    }
}

/// Stacks input `i` of every job along a new dim 0 into bytes (the CPU path of
/// [`crate::staging::to_device`]); returns the bytes and the batch shape.
#[cfg(test)]
fn stack(
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    pad: Option<i64>,
    config: &ModelConfig,
) -> (Vec<u8>, Vec<i64>) {
    let (shape, per_job) = plan(jobs, i, pad, config);
    let mut bytes = vec![0u8; shape[0] as usize * per_job];
    fill(&mut bytes, jobs, i, pad, &shape, per_job);
    (bytes, shape)
}

/// Copies a row-major tensor of `shape` into the top-left corner of a padded buffer of
/// `target` (same rank, each dimension at least as large).
fn copy_into(dst: &mut [u8], src: &[u8], shape: &[i64], target: &[i64], size: usize) {
    if shape.is_empty() {
        dst[..size].copy_from_slice(&src[..size]);
        return;
    }
    let rank = shape.len();
    let row = shape[rank - 1] as usize * size;
    let rows: usize = shape[..rank - 1].iter().product::<i64>() as usize;
    // Strides (in elements) of the padded target.
    let mut stride = vec![1usize; rank];
    for k in (0..rank - 1).rev() {
        stride[k] = stride[k + 1] * target[k + 1] as usize;
    }
    let mut idx = vec![0i64; rank.saturating_sub(1)];
    for r in 0..rows {
        let off: usize = idx
            .iter()
            .zip(&stride)
            .map(|(&x, &s)| x as usize * s)
            .sum::<usize>()
            * size;
        dst[off..off + row].copy_from_slice(&src[r * row..(r + 1) * row]);
        // Next multi-index over the leading dimensions.
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// The pad value as one element of `dtype`.
fn pad_bytes(dtype: DType, v: i64) -> Vec<u8> {
    match dtype {
        DType::F32 => (v as f32).to_le_bytes().to_vec(),
        DType::F64 => (v as f64).to_le_bytes().to_vec(),
        DType::Bf16 => half::bf16::from_f32(v as f32).to_le_bytes().to_vec(),
        DType::F16 => half::f16::from_f32(v as f32).to_le_bytes().to_vec(),
        DType::I64 => v.to_le_bytes().to_vec(),
        DType::I32 => (v as i32).to_le_bytes().to_vec(),
        DType::I16 => (v as i16).to_le_bytes().to_vec(),
        DType::I8 | DType::U8 | DType::Bool => vec![v as u8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: u32, buckets: bool, dims: &[Vec<i64>]) -> ModelConfig {
        let inputs = dims
            .iter()
            .map(|d| jetinfer_schemas::worker::InputSpec {
                dtype: DType::I64,
                shape: d.clone(),
            })
            .collect();
        let toml = format!("name = \"m\"\nversion = \"1\"\npath = \"m.pt\"\nmax_batch_size = {max}\ninputs = []\nshape_buckets = {buckets}\n");
        let mut c: ModelConfig = toml::from_str(&toml).unwrap();
        c.inputs = inputs;
        c
    }

    fn ids(v: &[i64]) -> Tensor<'static> {
        Tensor::owned(
            DType::I64,
            vec![v.len() as i64],
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    #[test]
    fn pads_sequences_to_the_longest() {
        let jobs = vec![vec![ids(&[1, 2, 3])], vec![ids(&[4])], vec![ids(&[5, 6])]];
        let (bytes, shape) = stack(&jobs, 0, Some(0), &config(8, false, &[vec![-1]]));
        assert_eq!(shape, vec![3, 3]);
        let t = Tensor::owned(DType::I64, shape, bytes);
        assert_eq!(t.to_f32_vec(), vec![1., 2., 3., 4., 0., 0., 5., 6., 0.]);
    }

    #[test]
    fn pads_two_dimensions_and_keeps_equal_shapes_as_they_are() {
        let a = Tensor::owned(DType::U8, vec![2, 2], vec![1, 2, 3, 4]);
        let b = Tensor::owned(DType::U8, vec![1, 3], vec![5, 6, 7]);
        let c = config(8, false, &[vec![-1, -1]]);
        let (bytes, shape) = stack(&[vec![a.clone()], vec![b]], 0, Some(9), &c);
        assert_eq!(shape, vec![2, 2, 3]);
        assert_eq!(bytes, vec![1, 2, 9, 3, 4, 9, 5, 6, 7, 9, 9, 9]);
        let (bytes, shape) = stack(&[vec![a.clone()], vec![a]], 0, None, &c);
        assert_eq!(shape, vec![2, 2, 2]);
        assert_eq!(bytes, vec![1, 2, 3, 4, 1, 2, 3, 4]);
    }

    #[test]
    fn pad_values_in_every_dtype() {
        assert_eq!(pad_bytes(DType::F16, 1), vec![0x00, 0x3c]);
        assert_eq!(pad_bytes(DType::F16, -2), vec![0x00, 0xc0]);
        assert_eq!(pad_bytes(DType::Bf16, 1), vec![0x80, 0x3f]);
        assert_eq!(pad_bytes(DType::F32, 1), 1f32.to_le_bytes().to_vec());
        assert_eq!(pad_bytes(DType::I32, -1), vec![0xff; 4]);
        assert_eq!(pad_bytes(DType::U8, 7), vec![7]);
    }

    #[test]
    fn buckets_round_lengths_up_and_repeat_the_first_job() {
        let c = config(32, true, &[vec![-1]]);
        let jobs = vec![vec![ids(&[1, 2, 3])], vec![ids(&[4])], vec![ids(&[5, 6])]];
        let (bytes, shape) = stack(&jobs, 0, Some(0), &c);
        assert_eq!(shape, vec![4, 16]);
        let v = Tensor::owned(DType::I64, shape, bytes).to_f32_vec();
        assert_eq!(&v[..4], &[1., 2., 3., 0.]);
        assert_eq!(&v[16..18], &[4., 0.]);
        assert_eq!(&v[48..64], &v[0..16], "the bucket row repeats job 0");
        let warm = crate::buckets::warm_shapes(&ModelConfig {
            warm_lengths: vec![16, 32],
            ..c
        });
        assert_eq!(
            warm.len(),
            10 * 2,
            "1, 2, 4, then multiples of 4 up to 32; two lengths"
        );
        assert_eq!(warm[0], (1, 16));
    }
}

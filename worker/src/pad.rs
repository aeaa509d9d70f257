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
//! Shape buckets (`shape_buckets = true`): every new input shape costs libtorch a lot the
//! first time (cuDNN plans, allocator growth; measured on the H100: a loop over varying
//! batch sizes ran at half the rate of a fixed one), and a dynamic batcher produces many
//! shapes. With buckets a batch is rounded up to one of a few sizes ([`bucket`]: powers of
//! two up to an eighth of the largest batch, then multiples of that eighth) by repeating
//! its first job, padded lengths are rounded up to a multiple of 16, the executor warms
//! every bucket at load ([`warm_shapes`]), and the extra rows are cut off the outputs
//! ([`unbucket`]).
//!
//! On CUDA the batch is written once, straight into a pinned host buffer kept by the
//! executor thread, and copied to the device without blocking ([`to_device`]): no
//! intermediate `Vec`, no pageable staging copy.

use std::cell::RefCell;

use jetinfer_schemas::{DType, Tensor};
use tch::{Device, Kind, TchError};

use crate::config::ModelConfig;

/// Padded dimensions are rounded up to a multiple of this when buckets are on.
const LENGTH_MULTIPLE: i64 = 16;

/// The batch size a batch of `n` runs at: `n` itself without buckets; with buckets the
/// next power of two up to `max / 8`, then the next multiple of `max / 8` (at most `max`,
/// and never less than `n`).
pub(crate) fn bucket(n: usize, max: usize, buckets: bool) -> usize {
    if !buckets || n == 0 {
        return n;
    }
    let step = max.div_ceil(8).max(1);
    let b = if n <= step {
        n.next_power_of_two().min(step)
    } else {
        n.div_ceil(step) * step
    };
    b.min(max).max(n)
}

/// The (batch size, dynamic length) pairs to warm at load: batch 1 and the largest batch
/// without buckets; every bucket times every `warm_lengths` entry with them.
pub(crate) fn warm_shapes(config: &ModelConfig) -> Vec<(usize, i64)> {
    let max = config.max_batch_size as usize;
    if !config.shape_buckets {
        return vec![(1, 1), (max, 1)];
    }
    let mut sizes: Vec<usize> = (1..=max).map(|n| bucket(n, max, true)).collect();
    sizes.dedup();
    let lengths = if config.warm_lengths.is_empty() {
        vec![1]
    } else {
        config.warm_lengths.clone()
    };
    sizes
        .iter()
        .flat_map(|&n| lengths.iter().map(move |&l| (n, l)))
        .collect()
}

/// Cuts bucket rows off an output: keeps the first `n` along dim 0.
pub(crate) fn unbucket(t: tch::Tensor, n: usize) -> tch::Tensor {
    match t.size().first() {
        Some(&d) if d > n as i64 => t.narrow(0, 0, n as i64),
        _ => t,
    }
}

thread_local! {
    /// This executor thread's pinned host buffers (one device per thread), one per model
    /// input: the copy of input 0 may still be in flight while input 1 is written, so the
    /// inputs of one batch never share a buffer. Reusing them across batches is safe: the
    /// device is synchronised before the first input of a batch is written (normally a
    /// no-op, as a batch ends with a blocking device → host copy of its outputs; it matters
    /// when a forward failed and its jobs are re-run).
    static STAGING: RefCell<Vec<Option<tch::Tensor>>> = const { RefCell::new(Vec::new()) };
}

/// Input `i` of every job as one batch tensor on `device` (wire dtype; the caller casts).
pub(crate) fn to_device(
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    config: &ModelConfig,
    device: Device,
    kind: Kind,
) -> Result<tch::Tensor, TchError> {
    let pad = config.pad.as_ref().map(|p| p[i]);
    let (shape, per_job) = plan(jobs, i, pad, config);
    let total: usize = shape[0] as usize * per_job;
    if device == Device::Cpu || total == 0 {
        let mut bytes = vec![0u8; total];
        fill(&mut bytes, jobs, i, pad, &shape, per_job);
        return tch::Tensor::f_from_data_size(&bytes, &shape, kind);
    }
    if let (0, Device::Cuda(d)) = (i, device) {
        tch::Cuda::synchronize(d as i64);
    }
    STAGING.with(|cell| {
        let mut slots = cell.borrow_mut();
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        let slot = &mut slots[i];
        if slot.as_ref().is_none_or(|t| (t.numel()) < total) {
            // Grow to what this batch needs (with headroom, so a slightly larger batch
            // does not reallocate): pinning is slow, so it happens rarely.
            let bytes = (total + total / 4) as i64;
            *slot = Some(
                tch::Tensor::f_zeros([bytes], (Kind::Uint8, Device::Cpu))?.f_pin_memory(device)?,
            );
        }
        let staging = slot.as_ref().expect("just set: this is a bug");
        // SAFETY: the buffer is a contiguous u8 tensor of at least `total` bytes owned by
        // this thread; nothing else reads or writes it while this slice lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(staging.data_ptr() as *mut u8, total) };
        fill(buf, jobs, i, pad, &shape, per_job);
        let host = staging
            .f_narrow(0, 0, total as i64)?
            .f_view_dtype(kind)?
            .f_view(shape.as_slice())?;
        host.f_to_device_(device, kind, true, false)
    })
}

/// The batch shape (rows, then the per-job target shape) and the bytes of one job.
fn plan(
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
fn fill(
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
/// [`to_device`]); returns the bytes and the batch shape.
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
        DType::Bf16 => (((v as f32).to_bits() >> 16) as u16).to_le_bytes().to_vec(),
        DType::F16 => f16_bits(v as f32).to_le_bytes().to_vec(),
        DType::I64 => v.to_le_bytes().to_vec(),
        DType::I32 => (v as i32).to_le_bytes().to_vec(),
        DType::I16 => (v as i16).to_le_bytes().to_vec(),
        DType::I8 | DType::U8 | DType::Bool => vec![v as u8],
    }
}

/// f32 → IEEE half (truncating; pad values are small integers, which are exact).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if x == 0.0 {
        sign
    } else if exp >= 31 {
        sign | 0x7c00
    } else if exp <= 0 {
        sign
    } else {
        sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
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
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
    }

    #[test]
    fn buckets_round_batches_and_lengths_up_and_repeat_the_first_job() {
        let sizes: Vec<usize> = (1..=128).map(|n| bucket(n, 128, true)).collect();
        let mut distinct = sizes.clone();
        distinct.dedup();
        assert_eq!(distinct, vec![1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128]);
        assert!(sizes.iter().enumerate().all(|(k, &b)| b > k));
        assert_eq!(bucket(5, 3, true), 5, "never below n");
        assert_eq!(bucket(37, 128, false), 37);
        let c = config(32, true, &[vec![-1]]);
        let jobs = vec![vec![ids(&[1, 2, 3])], vec![ids(&[4])], vec![ids(&[5, 6])]];
        let (bytes, shape) = stack(&jobs, 0, Some(0), &c);
        assert_eq!(shape, vec![4, 16]);
        let v = Tensor::owned(DType::I64, shape, bytes).to_f32_vec();
        assert_eq!(&v[..4], &[1., 2., 3., 0.]);
        assert_eq!(&v[16..18], &[4., 0.]);
        assert_eq!(&v[48..64], &v[0..16], "the bucket row repeats job 0");
        let warm = warm_shapes(&ModelConfig {
            warm_lengths: vec![16, 32],
            ..c
        });
        assert_eq!(
            warm.len(),
            10 * 2,
            "1, 2, 4, then multiples of 4 up to 32; two lengths"
        );
        assert_eq!(warm[0], (1, 16));
        let t = unbucket(tch::Tensor::zeros([4, 2], (Kind::Float, Device::Cpu)), 3);
        assert_eq!(t.size(), vec![3, 2]);
    }
}

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

use jetinfer_schemas::{DType, Tensor};

/// Stacks input `i` of every job along a new dim 0 and returns the bytes and the batch
/// shape. With `pad`, shapes may differ and are padded to the largest; without, the
/// caller guarantees equal shapes.
pub(crate) fn stack(jobs: &[Vec<Tensor<'static>>], i: usize, pad: Option<i64>) -> (Vec<u8>, Vec<i64>) {
    let first = &jobs[0][i];
    let mut target = first.shape.clone();
    if pad.is_some() {
        for job in jobs {
            for (t, &d) in target.iter_mut().zip(&job[i].shape) {
                *t = (*t).max(d);
            }
        }
    }
    let mut shape = Vec::with_capacity(target.len() + 1);
    shape.push(jobs.len() as i64);
    shape.extend_from_slice(&target);
    let size = first.dtype.size();
    let per_job: usize = target.iter().product::<i64>() as usize * size;
    let same = jobs.iter().all(|j| j[i].shape == target);
    if same || pad.is_none() {
        let mut bytes = Vec::with_capacity(per_job * jobs.len());
        for job in jobs {
            bytes.extend_from_slice(&job[i].data);
        }
        return (bytes, shape);
    }
    let fill = pad_bytes(first.dtype, pad.unwrap_or(0));
    let mut bytes = Vec::with_capacity(per_job * jobs.len());
    for job in jobs {
        let start = bytes.len();
        for _ in 0..per_job / size {
            bytes.extend_from_slice(&fill);
        }
        copy_into(&mut bytes[start..], &job[i].data, &job[i].shape, &target, size);
    }
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
        let off: usize = idx.iter().zip(&stride).map(|(&x, &s)| x as usize * s).sum::<usize>() * size;
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

    fn ids(v: &[i64]) -> Tensor<'static> {
        Tensor::owned(DType::I64, vec![v.len() as i64], v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    #[test]
    fn pads_sequences_to_the_longest() {
        let jobs = vec![vec![ids(&[1, 2, 3])], vec![ids(&[4])], vec![ids(&[5, 6])]];
        let (bytes, shape) = stack(&jobs, 0, Some(0));
        assert_eq!(shape, vec![3, 3]);
        let t = Tensor::owned(DType::I64, shape, bytes);
        assert_eq!(t.to_f32_vec(), vec![1., 2., 3., 4., 0., 0., 5., 6., 0.]);
    }

    #[test]
    fn pads_two_dimensions_and_keeps_equal_shapes_as_they_are() {
        let a = Tensor::owned(DType::U8, vec![2, 2], vec![1, 2, 3, 4]);
        let b = Tensor::owned(DType::U8, vec![1, 3], vec![5, 6, 7]);
        let (bytes, shape) = stack(&[vec![a.clone()], vec![b]], 0, Some(9));
        assert_eq!(shape, vec![2, 2, 3]);
        assert_eq!(bytes, vec![1, 2, 9, 3, 4, 9, 5, 6, 7, 9, 9, 9]);
        let (bytes, shape) = stack(&[vec![a.clone()], vec![a]], 0, None);
        assert_eq!(shape, vec![2, 2, 2]);
        assert_eq!(bytes, vec![1, 2, 3, 4, 1, 2, 3, 4]);
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
    }
}

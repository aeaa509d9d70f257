//! Splitting a golden batch (a leading sample dimension N) into one tensor per sample.

use jetinfer_schemas::Tensor;

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

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor<'static> {
        Tensor::from_f32(shape, v)
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
}

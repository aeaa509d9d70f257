//! Checking a job's inputs against a model's input spec, before it joins a batch, so a
//! bad job gets `invalid_input` and never touches its batch-mates.

use jetinfer_schemas::worker::InputSpec;
use jetinfer_schemas::{JobError, Tensor};

/// Count, dtype and shape (`-1` = any length ≥ 1) of every input.
pub fn check_inputs(spec: &[InputSpec], inputs: &[Tensor<'_>]) -> Result<(), JobError> {
    if spec.len() != inputs.len() {
        return Err(JobError::invalid_input(format!(
            "model takes {} inputs, job has {}",
            spec.len(),
            inputs.len()
        )));
    }
    for (i, (s, t)) in spec.iter().zip(inputs).enumerate() {
        if s.dtype != t.dtype {
            return Err(JobError::invalid_input(format!(
                "input {i}: model takes {}, job has {}",
                s.dtype, t.dtype
            )));
        }
        let fits = s.shape.len() == t.shape.len()
            && s.shape
                .iter()
                .zip(&t.shape)
                .all(|(&want, &got)| if want < 0 { got >= 1 } else { want == got });
        if !fits {
            return Err(JobError::invalid_input(format!(
                "input {i}: model takes shape {:?}, job has {:?}",
                s.shape, t.shape
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    #[test]
    fn checks_count_dtype_and_shape() {
        let spec = vec![InputSpec {
            dtype: DType::F32,
            shape: vec![-1, 2],
        }];
        let ok = Tensor::from_f32(vec![3, 2], &[0.0; 6]);
        assert!(check_inputs(&spec, std::slice::from_ref(&ok)).is_ok());
        assert!(check_inputs(&spec, &[]).is_err());
        assert!(check_inputs(&spec, &[Tensor::from_f32(vec![3, 3], &[0.0; 9])]).is_err());
        assert!(
            check_inputs(&spec, &[Tensor::from_f32(vec![0, 2], &[])]).is_err(),
            "dynamic dims need at least 1"
        );
        assert!(check_inputs(&spec, &[Tensor::owned(DType::U8, vec![3, 2], vec![0; 6])]).is_err());
        assert!(check_inputs(&spec, &[ok.clone(), ok]).is_err());
    }
}

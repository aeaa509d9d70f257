//! One forward of a batch: stacks per-job inputs on the device, runs the module, and
//! splits its outputs back into per-job tensors on the host.

use jetinfer_schemas::{DType, ErrorCode, JobError, Tensor};
use tch::{CModule, Device, IValue, Kind};

use crate::buckets::unbucket;
use crate::config::ModelConfig;
use crate::faults::{Faults, Injected};
use crate::loading::kind_of;
use crate::staging::{to_device, HostBatch};
use crate::torch_error::torch_error;

/// A loaded model on its executor thread: its TorchScript module, or none for a simulated
/// model (`sim` in its config, see sim.rs).
pub(crate) struct Model {
    pub config: ModelConfig,
    pub module: Option<CModule>,
}

fn dtype_of(k: Kind) -> Result<DType, JobError> {
    Ok(match k {
        Kind::Float => DType::F32,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::Bf16,
        Kind::Double => DType::F64,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Int16 => DType::I16,
        Kind::Int8 => DType::I8,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        other => {
            return Err(JobError::new(
                ErrorCode::Internal,
                format!("model returned unsupported dtype {other:?}"),
            ))
        }
    })
}

/// Stacks per-job inputs along a new dim 0, runs the module, splits outputs per job.
/// `host` holds the inputs already written into pinned memory by the batcher (see
/// staging.rs); without it they are written here.
pub(crate) fn run_batch(
    m: &Model,
    device: Device,
    faults: &Faults,
    inputs: &[Vec<Tensor<'static>>],
    host: Option<&HostBatch>,
) -> Result<Vec<Vec<Tensor<'static>>>, JobError> {
    let (Some(module), None) = (&m.module, &m.config.sim) else {
        return match &m.config.sim {
            Some(sim) => sim.run_batch(faults, inputs),
            None => Err(JobError::new(ErrorCode::Internal, "model has no module")),
        };
    };
    let mut args = Vec::with_capacity(m.config.inputs.len());
    for i in 0..m.config.inputs.len() {
        let first = &inputs[0][i];
        let kind = kind_of(first.dtype);
        // Padding, shape buckets and the pinned host buffer: see pad.rs and staging.rs.
        let mut t = match host.and_then(|h| h.inputs.get(i)) {
            Some(staged) => staged.f_to_device_(device, kind, true, false),
            None => to_device(inputs, i, &m.config, device, kind),
        }
        .map_err(torch_error)?;
        if first.dtype.is_float() && first.dtype != m.config.dtype {
            t = t.f_to_kind(kind_of(m.config.dtype)).map_err(torch_error)?;
        }
        args.push(IValue::Tensor(t));
    }
    // Injected faults act at the forward, where real ones happen.
    match faults.check(inputs) {
        Some(Injected::Error(e)) => return Err(torch_error(e)),
        Some(Injected::Hang) => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        None => {}
    }
    let out = module.forward_is(&args).map_err(torch_error)?;
    split_outputs(flatten(out)?, inputs.len())
}

/// Copies each output to the host and cuts it into `n` per-job tensors along dim 0.
fn split_outputs(
    tensors: Vec<tch::Tensor>,
    n: usize,
) -> Result<Vec<Vec<Tensor<'static>>>, JobError> {
    let mut per_job: Vec<Vec<Tensor<'static>>> =
        (0..n).map(|_| Vec::with_capacity(tensors.len())).collect();
    for t in tensors {
        let t = unbucket(t, n);
        let t = t
            .f_to(Device::Cpu)
            .map_err(torch_error)?
            .f_contiguous()
            .map_err(torch_error)?;
        let dims = t.size();
        if dims.first() != Some(&(n as i64)) {
            return Err(JobError::new(
                ErrorCode::Internal,
                format!("model output shape {dims:?} has no batch dimension of {n}"),
            ));
        }
        let dtype = dtype_of(t.kind())?;
        let numel = t.numel();
        let mut buf = vec![0u8; numel * dtype.size()];
        t.f_copy_data_u8(&mut buf, numel).map_err(torch_error)?;
        let per = buf.len() / n.max(1);
        for (j, chunk) in buf.chunks_exact(per.max(1)).take(n).enumerate() {
            per_job[j].push(Tensor::owned(dtype, dims[1..].to_vec(), chunk.to_vec()));
        }
        if per == 0 {
            for job in per_job.iter_mut() {
                job.push(Tensor::owned(dtype, dims[1..].to_vec(), Vec::new()));
            }
        }
    }
    Ok(per_job)
}

/// A module returns a tensor, or a tuple/list of tensors.
fn flatten(v: IValue) -> Result<Vec<tch::Tensor>, JobError> {
    match v {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => vs
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                _ => Err(JobError::new(
                    ErrorCode::Internal,
                    "model returned a non-tensor element",
                )),
            })
            .collect(),
        _ => Err(JobError::new(
            ErrorCode::Internal,
            "model returned neither a tensor nor a tuple of tensors",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_batch_output_per_job() {
        let t = tch::Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([3, 2]);
        let per_job = split_outputs(vec![t], 3).unwrap();
        assert_eq!(per_job.len(), 3);
        assert_eq!(per_job[1][0].shape, vec![2]);
        assert_eq!(per_job[1][0].to_f32_vec(), vec![3., 4.]);
        let no_batch = tch::Tensor::from_slice(&[1f32, 2.]);
        assert!(split_outputs(vec![no_batch], 3).is_err());
    }
}

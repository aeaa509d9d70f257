//! Model loading, shared by the executor and `jetinfer-worker ceiling`: the device a model
//! runs on, the TorchScript graph executor's settings, the module loaded in eval mode at
//! its dtype, and the sample batches that warm it up.

use jetinfer_schemas::{DType, JobError, Tensor};
use tch::{CModule, Device, Kind};

use crate::buckets::warm_shapes;
use crate::config::ModelConfig;
use crate::torch_error::torch_error;

/// A `device` entry of the models TOML that this process cannot use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("device {0:?} is neither cpu nor cuda:N")]
    Unknown(String),
    #[error("device {0} requested but CUDA is not available to libtorch (no GPU, or libtorch_cuda not linked)")]
    NoCuda(String),
    #[error("device {name} requested but only {count} CUDA devices exist")]
    Missing { name: String, count: i64 },
}

/// Why a model was refused at load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// libtorch failed to load the module or to run a warm-up batch; the message is the
    /// telling line of its error.
    #[error("{}", .0.message)]
    Torch(JobError),
    #[error("cannot read model file {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file is not the one declared (`--registry`, or `sha256` in the models file).
    #[error("sha256 mismatch: file {} has {got}, declared {want}", path.display())]
    Sha256 {
        path: std::path::PathBuf,
        got: String,
        want: String,
    },
    /// The thread that checks or loads the model ended without a result (it panicked).
    #[error("the thread that checks or loads the model ended without a result")]
    ExecutorGone,
}

/// Parses `cpu` / `cuda:N`; refuses CUDA when libtorch has no CUDA backend (rather than
/// silently running on the CPU).
pub(crate) fn parse_device(name: &str) -> Result<Device, DeviceError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = name
        .strip_prefix("cuda:")
        .or_else(|| (name == "cuda").then_some("0"))
        .and_then(|i| i.parse::<usize>().ok())
        .ok_or_else(|| DeviceError::Unknown(name.to_string()))?;
    if !tch::Cuda::is_available() {
        return Err(DeviceError::NoCuda(name.to_string()));
    }
    let count = tch::Cuda::device_count();
    if index >= count as usize {
        return Err(DeviceError::Missing {
            name: name.to_string(),
            count,
        });
    }
    Ok(Device::Cuda(index))
}

/// The libtorch kind of a wire dtype.
pub(crate) fn kind_of(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::Bf16 => Kind::BFloat16,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

/// Applies `JETINFER_JIT_OPTIMIZE` (default on, libtorch's default) to the calling thread:
/// `0` turns off the TorchScript graph executor's optimisation — profiling, shape
/// specialisation and fusion — whose re-specialisation on every new batch size costs
/// more than it saves when batch sizes vary (see docs/benchmarks.md). libtorch keeps this
/// setting per thread, so each thread calls this before it runs a model.
pub fn apply_jit_settings() {
    let optimize = std::env::var("JETINFER_JIT_OPTIMIZE")
        .map_or(true, |v| !matches!(v.as_str(), "0" | "false" | "off"));
    tch::jit::set_graph_executor_optimize(optimize);
}

/// Loads the model's module on `device` in eval mode, cast to its floating dtype.
pub(crate) fn load_module(config: &ModelConfig, device: Device) -> Result<CModule, tch::TchError> {
    let mut module = CModule::load_on_device(&config.path, device)?;
    module.set_eval();
    if config.dtype.is_float() && config.dtype != DType::F32 {
        module.to(device, kind_of(config.dtype), false);
    }
    Ok(module)
}

/// Runs `forward` over zero-filled sample batches of every warm shape, then waits for the
/// device: the first call of a TorchScript module at a shape compiles and allocates, and
/// jobs should not pay for that.
pub(crate) fn warm_up(
    config: &ModelConfig,
    device: Device,
    mut forward: impl FnMut(&[Vec<Tensor<'static>>]) -> Result<(), JobError>,
) -> Result<(), LoadError> {
    let _guard = tch::no_grad_guard();
    for (n, len) in warm_shapes(config) {
        let sample: Vec<Tensor<'static>> = config
            .inputs
            .iter()
            .map(|s| {
                let shape: Vec<i64> = s
                    .shape
                    .iter()
                    .map(|&d| if d < 0 { len } else { d })
                    .collect();
                let count: i64 = shape.iter().product();
                Tensor::owned(s.dtype, shape, vec![0; count as usize * s.dtype.size()])
            })
            .collect();
        forward(&vec![sample; n]).map_err(LoadError::Torch)?;
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    Ok(())
}

/// [`load_module`] with its error as a [`LoadError`].
pub(crate) fn load_for_serving(config: &ModelConfig, device: Device) -> Result<CModule, LoadError> {
    load_module(config, device).map_err(|e| LoadError::Torch(torch_error(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_refuses_other_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let e = parse_device("tpu:0").unwrap_err();
        assert_eq!(e.to_string(), "device \"tpu:0\" is neither cpu nor cuda:N");
    }
}

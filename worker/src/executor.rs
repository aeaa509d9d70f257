//! The executor: one OS thread per device owns that device's TorchScript modules and runs
//! their batches, one at a time, under no-grad.
//!
//! Batches arrive on a bounded channel (capacity 1: one batch runs, the next waits ready,
//! as in text-embeddings-inference), so the batchers feel backpressure instead of piling up
//! work. A batch whose forward fails is re-run job by job, so one job the model chokes on
//! does not fail its batch-mates. A batch that runs out of device memory is split in halves
//! and retried, and the model remembers the size that fit; only a job that alone does not
//! fit gets `resource_exhausted`. A sticky CUDA error (illegal address, device assert)
//! leaves the context unusable: the thread reports it as fatal and runs nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use jetinfer_schemas::{DType, ErrorCode, JobError, Tensor};
use tch::{CModule, Device, IValue, Kind};
use tokio::sync::{mpsc, oneshot};

use crate::config::ModelConfig;
use crate::faults::{Faults, Injected};

/// A batch for one model: per job, its input tensors (same shapes within a batch).
pub(crate) struct ExecBatch {
    /// Index of the model among the thread's models.
    pub model: usize,
    pub inputs: Vec<Vec<Tensor<'static>>>,
    pub reply: oneshot::Sender<ExecOutput>,
}

/// Per job, its outputs or the error that stopped it; plus the batch's timing.
pub(crate) struct ExecOutput {
    pub started: Instant,
    pub compute_ms: f64,
    pub outputs: Vec<JobOutput>,
    /// A sticky device error: no job of this batch ran, and none will on this device.
    pub fatal: Option<String>,
}

pub(crate) type JobOutput = Result<Vec<Tensor<'static>>, JobError>;

/// What the device thread shares with the rest of the worker.
#[derive(Clone, Default)]
pub(crate) struct DeviceState {
    /// Unix ms when the running forward started; 0 while idle (read by the watchdog).
    pub busy_since_ms: Arc<AtomicU64>,
    pub faults: Arc<Faults>,
    /// Batches handed to this device and not finished (the batchers' idle signal).
    pub load: crate::device_load::DeviceLoad,
}

struct Model {
    config: ModelConfig,
    module: CModule,
}

/// Parses `cpu` / `cuda:N`; refuses CUDA when libtorch has no CUDA backend (rather than
/// silently running on the CPU).
pub(crate) fn parse_device(name: &str) -> Result<Device, String> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let index = name
        .strip_prefix("cuda:")
        .or_else(|| (name == "cuda").then_some("0"))
        .and_then(|i| i.parse::<usize>().ok())
        .ok_or_else(|| format!("device {name:?} is neither cpu nor cuda:N"))?;
    if !tch::Cuda::is_available() {
        return Err(format!("device {name} requested but CUDA is not available to libtorch (no GPU, or libtorch_cuda not linked)"));
    }
    if index >= tch::Cuda::device_count() as usize {
        return Err(format!(
            "device {name} requested but only {} CUDA devices exist",
            tch::Cuda::device_count()
        ));
    }
    Ok(Device::Cuda(index))
}

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

/// libtorch errors carry a whole C++ backtrace: keep the first line; out-of-memory gets
/// its own code.
pub(crate) fn torch_error(e: tch::TchError) -> JobError {
    let text = e.to_string();
    let code = if text.contains("out of memory") {
        ErrorCode::ResourceExhausted
    } else {
        ErrorCode::Internal
    };
    JobError::new(code, telling_line(&text))
}

/// The line of a libtorch error worth showing. A TorchScript failure starts with "The
/// following operation failed in the TorchScript interpreter" and names the real cause
/// (e.g. "CUDA out of memory. Tried to allocate …") further down, after the traceback.
fn telling_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.contains("out of memory"))
        .or_else(|| lines.iter().rev().find(|l| l.starts_with("RuntimeError:")))
        .or_else(|| lines.first());
    pick.map_or_else(
        || "libtorch error".to_string(),
        |l| l.trim_start_matches("RuntimeError: ").to_string(),
    )
}

/// Starts the thread of one device: loads and warms its models, then serves batches.
/// Returns the batch sender and, per model (in order), whether it loaded.
pub(crate) fn spawn_device(
    device_name: String,
    configs: Vec<ModelConfig>,
    state: DeviceState,
) -> (
    mpsc::Sender<ExecBatch>,
    oneshot::Receiver<Vec<Result<(), String>>>,
) {
    let (tx, mut rx) = mpsc::channel::<ExecBatch>(1);
    let (loaded_tx, loaded_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("exec-{device_name}"))
        .spawn(move || {
            let device = parse_device(&device_name);
            crate::ceiling::apply_jit_settings();
            let mut models: Vec<Option<Model>> = Vec::new();
            let mut report = Vec::new();
            for config in configs {
                let result = device
                    .clone()
                    .and_then(|d| load(&config, d).map_err(|e| e.message));
                match result {
                    Ok(m) => {
                        models.push(Some(m));
                        report.push(Ok(()));
                    }
                    Err(e) => {
                        models.push(None);
                        report.push(Err(e));
                    }
                }
            }
            let _ = loaded_tx.send(report);
            let Ok(device) = device else { return };
            let _guard = tch::no_grad_guard();
            let mut safe_batch: Vec<usize> = models.iter().map(|m| m.as_ref().map_or(1, |m| m.config.max_batch_size as usize)).collect();
            let mut fatal: Option<String> = None;
            while let Some(batch) = rx.blocking_recv() {
                let started = Instant::now();
                state.busy_since_ms.store(jetinfer_schemas::now_ms(), Ordering::Relaxed);
                let result = match (&fatal, models.get(batch.model).and_then(Option::as_ref)) {
                    (Some(f), _) => Err(f.clone()),
                    (None, Some(m)) => run_adaptive(m, device, &state.faults, &batch.inputs, &mut safe_batch[batch.model]),
                    (None, None) => Ok(batch.inputs.iter().map(|_| Err(JobError::new(ErrorCode::Internal, "model not loaded"))).collect()),
                };
                state.busy_since_ms.store(0, Ordering::Relaxed);
                let compute_ms = started.elapsed().as_secs_f64() * 1e3;
                let output = match result {
                    Ok(outputs) => ExecOutput { started, compute_ms, outputs, fatal: None },
                    Err(why) => {
                        if fatal.is_none() {
                            tracing::error!(device = %device_name, error = %why, "sticky device error: this device runs nothing more");
                        }
                        fatal = Some(why.clone());
                        ExecOutput { started, compute_ms, outputs: Vec::new(), fatal: Some(why) }
                    }
                };
                state.load.finished();
                let _ = batch.reply.send(output);
            }
        })
        .expect("spawning the executor thread failed: out of resources");
    (tx, loaded_rx)
}

fn load(config: &ModelConfig, device: Device) -> Result<Model, JobError> {
    let mut module = CModule::load_on_device(&config.path, device).map_err(torch_error)?;
    module.set_eval();
    if config.dtype.is_float() && config.dtype != DType::F32 {
        module.to(device, kind_of(config.dtype), false);
    }
    let model = Model {
        config: config.clone(),
        module,
    };
    // Warm-up at batch 1 and the largest batch: the first call of a TorchScript module
    // compiles and allocates; jobs should not pay for that.
    let _guard = tch::no_grad_guard();
    for (n, len) in crate::pad::warm_shapes(config) {
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
        run_batch(&model, device, &Faults::default(), &vec![sample; n])?;
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    tracing::info!(model = %config.name, version = %config.version, device = ?device, dtype = %config.dtype, "model loaded and warm");
    Ok(model)
}

/// Errors after which the CUDA context is unusable (they are "sticky": every later call
/// fails too), so the worker must stop and be restarted.
fn is_sticky(e: &JobError) -> bool {
    const STICKY: [&str; 5] = [
        "illegal memory access",
        "device-side assert",
        "unspecified launch failure",
        "misaligned address",
        "illegal instruction",
    ];
    STICKY.iter().any(|m| e.message.contains(m))
}

/// Runs a batch within the model's known safe size. Out of memory: halve, remember, retry;
/// another failure: run the jobs one by one so only the culprit fails. `Err` = sticky error.
fn run_adaptive(
    m: &Model,
    device: Device,
    faults: &Faults,
    inputs: &[Vec<Tensor<'static>>],
    safe: &mut usize,
) -> Result<Vec<JobOutput>, String> {
    if inputs.len() > *safe {
        let size = *safe;
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(size) {
            out.extend(run_adaptive(m, device, faults, chunk, safe)?);
        }
        return Ok(out);
    }
    match run_batch(m, device, faults, inputs) {
        Ok(outs) => Ok(outs.into_iter().map(Ok).collect()),
        Err(e) if is_sticky(&e) => Err(e.message),
        Err(e) if inputs.len() == 1 => Ok(vec![Err(e)]),
        Err(e) if e.code == ErrorCode::ResourceExhausted => {
            *safe = (inputs.len() / 2).max(1);
            tracing::warn!(model = %m.config.name, batch = inputs.len(), safe_batch = *safe, "out of device memory; splitting the batch");
            run_adaptive(m, device, faults, inputs, safe)
        }
        Err(e) => {
            tracing::warn!(model = %m.config.name, jobs = inputs.len(), error = %e, "batch failed; running its jobs one by one");
            let mut out = Vec::with_capacity(inputs.len());
            for one in inputs.chunks(1) {
                out.extend(run_adaptive(m, device, faults, one, safe)?);
            }
            Ok(out)
        }
    }
}

/// Stacks per-job inputs along a new dim 0, runs the module, splits outputs per job.
fn run_batch(
    m: &Model,
    device: Device,
    faults: &Faults,
    inputs: &[Vec<Tensor<'static>>],
) -> Result<Vec<Vec<Tensor<'static>>>, JobError> {
    let n = inputs.len();
    let mut args = Vec::with_capacity(m.config.inputs.len());
    for i in 0..m.config.inputs.len() {
        let first = &inputs[0][i];
        // Padding, shape buckets and the pinned host buffer: see pad.rs.
        let mut t = crate::pad::to_device(inputs, i, &m.config, device, kind_of(first.dtype))
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
    let out = m.module.forward_is(&args).map_err(torch_error)?;
    let tensors = flatten(out)?;
    let mut per_job: Vec<Vec<Tensor<'static>>> =
        (0..n).map(|_| Vec::with_capacity(tensors.len())).collect();
    for t in tensors {
        let t = crate::pad::unbucket(t, n);
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
    use super::telling_line;

    #[test]
    fn picks_the_cause_out_of_a_torchscript_traceback() {
        let text = "Internal torch error: The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"x.py\", line 5\nRuntimeError: CUDA out of memory. Tried to allocate 84.00 GiB. GPU 0 has a total capacity of 79.19 GiB\n";
        assert_eq!(telling_line(text), "CUDA out of memory. Tried to allocate 84.00 GiB. GPU 0 has a total capacity of 79.19 GiB");
        let other =
            "Internal torch error: The following operation failed.\nRuntimeError: shape mismatch\n";
        assert_eq!(telling_line(other), "shape mismatch");
        assert_eq!(telling_line("just one line"), "just one line");
        assert_eq!(telling_line(""), "libtorch error");
    }
}

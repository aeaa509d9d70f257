//! `jetinfer-worker ceiling`: the model alone, run in a tight loop through the same
//! libtorch (tch) at the same batch size and dtype as the worker, so `jetinfer bench
//! --ceiling` can report pipeline / ceiling. It lives in the worker because only the
//! worker links libtorch.
//!
//! Three loops, each after a warm-up: `forward` keeps the batch on the device and times
//! forward + synchronize (the GPU's own limit; `jobs_per_s`, the ceiling the ratios use);
//! `with_copies` adds what every pipeline batch must also do — the host → device copy of
//! the inputs and the device → host copy of the outputs — as the executor does them;
//! `varying_batch` does the same with batch sizes that vary as the pipeline's do, after
//! running each size once (`first_use_ms_per_size`: what a batch of a never-seen shape
//! costs).
//! Prints one JSON line on stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use jetinfer_schemas::DType;
use tch::{CModule, Device, IValue, Tensor};

use crate::config::ModelsFile;
use crate::executor::{kind_of, parse_device};

/// Flags of `jetinfer-worker ceiling`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "jetinfer-worker ceiling",
    about = "Runs one model alone in a tight loop and prints its throughput as JSON"
)]
pub struct CeilingArgs {
    /// The models TOML (device, dtype and input spec come from it).
    #[arg(long, env = "JETINFER_MODELS")]
    pub models: PathBuf,
    #[arg(long)]
    pub model: String,
    /// Batch size [default: the model's max_batch_size].
    #[arg(long)]
    pub batch: Option<i64>,
    /// Seconds per loop (after a warm-up of a third of it).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Length of dynamic dimensions (`-1` in the spec).
    #[arg(long, default_value_t = 128)]
    pub dyn_len: i64,
}

/// Applies `JETINFER_JIT_OPTIMIZE` (default on, libtorch's default) to the calling thread:
/// `0` turns off the TorchScript graph executor's optimisation — profiling, shape
/// specialisation and fusion — whose re-specialisation on every new batch size costs
/// more than it saves when batch sizes vary (see docs/benchmarks.md). libtorch keeps this
/// setting per thread, so each executor thread calls this before it runs a model.
pub fn apply_jit_settings() {
    let optimize = std::env::var("JETINFER_JIT_OPTIMIZE")
        .map_or(true, |v| !matches!(v.as_str(), "0" | "false" | "off"));
    tch::jit::set_graph_executor_optimize(optimize);
}

/// Parses `args` (the words after `ceiling`) and runs.
pub fn main_from_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    use clap::Parser;
    let args = CeilingArgs::parse_from(std::iter::once("ceiling".to_string()).chain(args));
    let result = run(&args)?;
    println!("{result}");
    Ok(())
}

/// Runs both loops and returns the report.
pub fn run(args: &CeilingArgs) -> anyhow::Result<serde_json::Value> {
    let file = ModelsFile::load(&args.models)?;
    let m = file
        .models
        .into_iter()
        .find(|m| m.name == args.model)
        .with_context(|| format!("model {} is not in {}", args.model, args.models.display()))?;
    let device = parse_device(&m.device).map_err(anyhow::Error::msg)?;
    let batch = args.batch.unwrap_or(m.max_batch_size as i64).max(1);
    apply_jit_settings();
    let _guard = tch::no_grad_guard();
    let mut module = CModule::load_on_device(&m.path, device)
        .with_context(|| format!("loading {}", m.path.display()))?;
    module.set_eval();
    if m.dtype.is_float() && m.dtype != DType::F32 {
        module.to(device, kind_of(m.dtype), false);
    }
    // Host inputs as jobs would bring them: the wire dtype, random values.
    let host: Vec<Tensor> = m
        .inputs
        .iter()
        .map(|s| {
            let mut shape = vec![batch];
            shape.extend(
                s.shape
                    .iter()
                    .map(|&d| if d < 0 { args.dyn_len } else { d }),
            );
            let kind = kind_of(s.dtype);
            if s.dtype.is_float() {
                Tensor::randn(shape.as_slice(), (kind, Device::Cpu))
            } else if s.dtype == DType::U8 {
                Tensor::randint(256, shape.as_slice(), (kind, Device::Cpu))
            } else {
                Tensor::randint_low(1, 1000, shape.as_slice(), (kind, Device::Cpu))
            }
        })
        .collect();
    let to_device = |t: &Tensor| -> Tensor {
        let t = t.to(device);
        if t.is_floating_point() && kind_of(m.dtype) != t.kind() && m.dtype.is_float() {
            t.to_kind(kind_of(m.dtype))
        } else {
            t
        }
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let resident: Vec<IValue> = host.iter().map(|t| IValue::Tensor(to_device(t))).collect();
    let secs = Duration::from_secs_f64(args.seconds.max(0.1));

    // Forward only: inputs already on the device.
    let forward = timed_loop(secs, || {
        let out = module.forward_is(&resident)?;
        sync();
        Ok(out)
    })?;
    // With the copies the executor makes.
    let with_copies = timed_loop(secs, || {
        let inputs: Vec<IValue> = host.iter().map(|t| IValue::Tensor(to_device(t))).collect();
        let out = module.forward_is(&inputs)?;
        for t in tensors(out) {
            let _ = t.to(Device::Cpu);
        }
        Ok(IValue::None)
    })?;
    // With copies, batch sizes varying as the pipeline's do (uniform in batch/2..=batch):
    // TorchScript and cuDNN specialise per shape, so a fixed-size loop can flatter.
    let sizes: Vec<i64> = (0..97)
        .map(|k| batch / 2 + (k * 37) % (batch - batch / 2 + 1))
        .map(|b| b.max(1))
        .collect();
    let run_size = |b: i64| -> Result<(), tch::TchError> {
        let inputs: Vec<IValue> = host
            .iter()
            .map(|t| IValue::Tensor(to_device(&t.narrow(0, 0, b))))
            .collect();
        let out = module.forward_is(&inputs)?;
        for t in tensors(out) {
            let _ = t.to(Device::Cpu);
        }
        Ok(())
    };
    // First use of each size, timed on its own: what a batch of a new shape costs.
    let mut distinct = sizes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let first_use = Instant::now();
    for &b in &distinct {
        run_size(b)?;
    }
    let first_use_ms = first_use.elapsed().as_secs_f64() * 1e3 / distinct.len() as f64;
    // Then the steady state over the same sizes.
    let mut k = 0;
    let mut varying_jobs = 0i64;
    let varying = timed_loop(secs, || {
        let b = sizes[k % sizes.len()];
        k += 1;
        varying_jobs += b;
        run_size(b)?;
        Ok(IValue::None)
    })?;
    // Jobs of the measured part only: the warm-up ran the first iterations.
    let varying_measured = varying_jobs as f64 * varying.iters as f64 / k.max(1) as f64;
    let per_s = |l: &Loop| l.iters as f64 * batch as f64 / l.elapsed.as_secs_f64();
    Ok(serde_json::json!({
        "model": m.name,
        "device": m.device,
        "dtype": m.dtype.as_str(),
        "batch": batch,
        "dyn_len": args.dyn_len,
        "cuda_device_name": device_name(device),
        "jobs_per_s": per_s(&forward),
        "forward_ms_p50": forward.p50_ms,
        "with_copies_jobs_per_s": per_s(&with_copies),
        "with_copies_ms_p50": with_copies.p50_ms,
        "varying_batch_jobs_per_s": varying_measured / varying.elapsed.as_secs_f64(),
        "varying_batch_ms_p50": varying.p50_ms,
        "first_use_ms_per_size": first_use_ms,
        "jit_optimize": std::env::var("JETINFER_JIT_OPTIMIZE").unwrap_or_else(|_| "1".into()),
        "iterations": forward.iters + with_copies.iters + varying.iters,
    }))
}

struct Loop {
    iters: u64,
    elapsed: Duration,
    p50_ms: f64,
}

/// Warms up for a third of `secs`, then runs `step` for `secs`.
fn timed_loop(
    secs: Duration,
    mut step: impl FnMut() -> Result<IValue, tch::TchError>,
) -> anyhow::Result<Loop> {
    let warm = Instant::now();
    while warm.elapsed() < secs / 3 {
        step()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < secs {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = start.elapsed();
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(Loop {
        iters: times.len() as u64,
        elapsed,
        p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
    })
}

fn tensors(v: IValue) -> Vec<Tensor> {
    match v {
        IValue::Tensor(t) => vec![t],
        IValue::TensorList(ts) => ts,
        IValue::Tuple(vs) | IValue::GenericList(vs) => vs.into_iter().flat_map(tensors).collect(),
        _ => Vec::new(),
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

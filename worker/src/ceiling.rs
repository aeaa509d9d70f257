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

use jetinfer_schemas::DType;
use tch::{CModule, Device, IValue, Tensor};

use crate::config::{ModelConfig, ModelsFile, ModelsFileError};
use crate::loading::{apply_jit_settings, kind_of, load_module, parse_device, DeviceError};

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

/// Why the ceiling could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error(transparent)]
    ModelsFile(#[from] ModelsFileError),
    #[error("model {model} is not in {}", file.display())]
    UnknownModel { model: String, file: PathBuf },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("loading {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Parses `args` (the words after `ceiling`) and runs.
pub fn main_from_args(args: impl IntoIterator<Item = String>) -> Result<(), CeilingError> {
    use clap::Parser;
    let args = CeilingArgs::parse_from(std::iter::once("ceiling".to_string()).chain(args));
    let result = run(&args)?;
    println!("{result}");
    Ok(())
}

/// The loaded model with host inputs as jobs would bring them.
struct Bench {
    config: ModelConfig,
    device: Device,
    module: CModule,
    batch: i64,
    /// The wire dtype, random values, `batch` rows.
    host: Vec<Tensor>,
}

impl Bench {
    /// Loads the model through the executor's loading path and makes its host inputs.
    fn load(args: &CeilingArgs) -> Result<Bench, CeilingError> {
        let file = ModelsFile::load(&args.models)?;
        let config = file
            .models
            .into_iter()
            .find(|m| m.name == args.model)
            .ok_or_else(|| CeilingError::UnknownModel {
                model: args.model.clone(),
                file: args.models.clone(),
            })?;
        let device = parse_device(&config.device)?;
        let batch = args.batch.unwrap_or(config.max_batch_size as i64).max(1);
        apply_jit_settings();
        let module = load_module(&config, device).map_err(|source| CeilingError::Load {
            path: config.path.clone(),
            source,
        })?;
        let host = config
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
        Ok(Bench {
            config,
            device,
            module,
            batch,
            host,
        })
    }

    /// A host input on the device, floating inputs cast to the model's dtype.
    fn to_device(&self, t: &Tensor) -> Tensor {
        let t = t.to(self.device);
        let dtype = self.config.dtype;
        if t.is_floating_point() && kind_of(dtype) != t.kind() && dtype.is_float() {
            t.to_kind(kind_of(dtype))
        } else {
            t
        }
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// The first `rows` of each input copied to the device, the forward, and the outputs
    /// copied back: what every pipeline batch does.
    fn with_copies(&self, rows: i64) -> Result<(), tch::TchError> {
        let inputs: Vec<IValue> = self
            .host
            .iter()
            .map(|t| IValue::Tensor(self.to_device(&t.narrow(0, 0, rows))))
            .collect();
        let out = self.module.forward_is(&inputs)?;
        for t in tensors(out) {
            let _ = t.to(Device::Cpu);
        }
        Ok(())
    }
}

/// Runs the three loops and returns the report.
pub fn run(args: &CeilingArgs) -> Result<serde_json::Value, CeilingError> {
    let bench = Bench::load(args)?;
    let _guard = tch::no_grad_guard();
    let batch = bench.batch;
    let secs = Duration::from_secs_f64(args.seconds.max(0.1));

    // Forward only: inputs already on the device.
    let resident: Vec<IValue> = bench
        .host
        .iter()
        .map(|t| IValue::Tensor(bench.to_device(t)))
        .collect();
    let forward = timed_loop(secs, || {
        bench.module.forward_is(&resident)?;
        bench.sync();
        Ok(())
    })?;
    // With the copies the executor makes.
    let with_copies = timed_loop(secs, || bench.with_copies(batch))?;
    let varying = varying_batch(&bench, secs)?;
    let per_s = |l: &Loop| l.iters as f64 * batch as f64 / l.elapsed.as_secs_f64();
    let m = &bench.config;
    Ok(serde_json::json!({
        "model": m.name,
        "device": m.device,
        "dtype": m.dtype.as_str(),
        "batch": batch,
        "dyn_len": args.dyn_len,
        "cuda_device_name": device_name(bench.device),
        "jobs_per_s": per_s(&forward),
        "forward_ms_p50": forward.p50_ms,
        "with_copies_jobs_per_s": per_s(&with_copies),
        "with_copies_ms_p50": with_copies.p50_ms,
        "varying_batch_jobs_per_s": varying.jobs_per_s,
        "varying_batch_ms_p50": varying.run.p50_ms,
        "first_use_ms_per_size": varying.first_use_ms,
        "jit_optimize": std::env::var("JETINFER_JIT_OPTIMIZE").unwrap_or_else(|_| "1".into()),
        "iterations": forward.iters + with_copies.iters + varying.run.iters,
    }))
}

/// The varying-batch loop's figures.
struct Varying {
    run: Loop,
    jobs_per_s: f64,
    first_use_ms: f64,
}

/// With copies, batch sizes varying as the pipeline's do (uniform in batch/2..=batch):
/// TorchScript and cuDNN specialise per shape, so a fixed-size loop can flatter. Each size
/// runs once first, timed on its own: what a batch of a never-seen shape costs.
fn varying_batch(bench: &Bench, secs: Duration) -> Result<Varying, CeilingError> {
    let batch = bench.batch;
    let sizes: Vec<i64> = (0..97)
        .map(|k| batch / 2 + (k * 37) % (batch - batch / 2 + 1))
        .map(|b| b.max(1))
        .collect();
    let mut distinct = sizes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let first_use = Instant::now();
    for &b in &distinct {
        bench.with_copies(b)?;
    }
    let first_use_ms = first_use.elapsed().as_secs_f64() * 1e3 / distinct.len() as f64;
    // Then the steady state over the same sizes.
    let mut k = 0;
    let mut jobs = 0i64;
    let run = timed_loop(secs, || {
        let b = sizes[k % sizes.len()];
        k += 1;
        jobs += b;
        bench.with_copies(b)
    })?;
    // Jobs of the measured part only: the warm-up ran the first iterations.
    let measured = jobs as f64 * run.iters as f64 / k.max(1) as f64;
    Ok(Varying {
        jobs_per_s: measured / run.elapsed.as_secs_f64(),
        run,
        first_use_ms,
    })
}

struct Loop {
    iters: u64,
    elapsed: Duration,
    p50_ms: f64,
}

/// Warms up for a third of `secs`, then runs `step` for `secs`.
fn timed_loop(
    secs: Duration,
    mut step: impl FnMut() -> Result<(), tch::TchError>,
) -> Result<Loop, tch::TchError> {
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

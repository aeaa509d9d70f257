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

use jetinfer_schemas::{ErrorCode, JobError, Tensor};
use tch::Device;
use tokio::sync::{mpsc, oneshot};

use crate::config::ModelConfig;
use crate::device_load::DeviceLoad;
use crate::exec_batch::{ExecBatch, ExecOutput, JobOutput, StickyError};
use crate::faults::Faults;
use crate::forward::{run_batch, Model};
use crate::loading::{apply_jit_settings, load_for_serving, parse_device, warm_up, LoadError};
use crate::staging::HostBatch;
use crate::torch_error::is_sticky;

/// Per model (in the order given), whether it loaded.
pub(crate) type LoadReport = Vec<Result<(), LoadError>>;

/// What the device thread shares with the rest of the worker.
#[derive(Clone, Default)]
pub(crate) struct DeviceState {
    /// Unix ms when the running forward started; 0 while idle (read by the watchdog).
    pub busy_since_ms: Arc<AtomicU64>,
    pub faults: Arc<Faults>,
    /// Batches handed to this device and not finished (the batchers' idle signal).
    pub load: DeviceLoad,
    /// Pinned host buffers the batchers write batches into (CUDA devices only).
    pub pinned: Option<Arc<crate::staging::PinnedPool>>,
    /// Cancelled once the thread has ended and dropped its modules (every batch sender
    /// gone: how a version is unloaded, see lifecycle.rs).
    pub exited: tokio_util::sync::CancellationToken,
}

/// The device thread's models and what it knows about them.
struct Thread {
    device_name: String,
    device: Device,
    state: DeviceState,
    models: Vec<Option<Model>>,
    /// Per model, the largest batch known to fit in device memory.
    safe_batch: Vec<usize>,
    /// The sticky error that ended this device, once one happened.
    fatal: Option<StickyError>,
}

/// Starts the thread of one device: loads and warms its models, then serves batches.
/// Returns the batch sender and, per model (in order), whether it loaded.
pub(crate) fn spawn_device(
    device_name: String,
    configs: Vec<ModelConfig>,
    state: DeviceState,
) -> (mpsc::Sender<ExecBatch>, oneshot::Receiver<LoadReport>) {
    let (tx, mut rx) = mpsc::channel::<ExecBatch>(1);
    let (loaded_tx, loaded_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("exec-{device_name}"))
        .spawn(move || {
            let device = parse_device(&device_name);
            apply_jit_settings();
            let (models, report) = load_all(&device, configs);
            let _ = loaded_tx.send(report);
            let Ok(device) = device else { return };
            let _guard = tch::no_grad_guard();
            let safe_batch = models
                .iter()
                .map(|m| m.as_ref().map_or(1, |m| m.config.max_batch_size as usize))
                .collect();
            let mut thread = Thread {
                device_name,
                device,
                state,
                models,
                safe_batch,
                fatal: None,
            };
            while let Some(batch) = rx.blocking_recv() {
                let output = thread.run(batch.model, &batch.inputs, batch.host.as_ref());
                // The outputs came back: every copy of the host batch has finished, so its
                // pinned buffers may be written again.
                drop(batch.host);
                thread.state.load.finished();
                let _ = batch.reply.send(output);
            }
            // Every sender is gone: free the modules, then say so.
            let exited = thread.state.exited.clone();
            drop(thread);
            exited.cancel();
        })
        .expect("spawning the executor thread failed: out of resources");
    (tx, loaded_rx)
}

/// Loads every model on the device (none when the device is unusable).
fn load_all(
    device: &Result<Device, crate::loading::DeviceError>,
    configs: Vec<ModelConfig>,
) -> (Vec<Option<Model>>, LoadReport) {
    let mut models = Vec::new();
    let mut report = Vec::new();
    for config in configs {
        let result = match device {
            Ok(d) => load(&config, *d),
            Err(e) => Err(LoadError::Device(e.clone())),
        };
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
    (models, report)
}

/// Loads one model and warms it up at every warm shape.
fn load(config: &ModelConfig, device: Device) -> Result<Model, LoadError> {
    let module = load_for_serving(config, device)?;
    let model = Model {
        config: config.clone(),
        module,
    };
    let faults = Faults::default();
    warm_up(config, device, |batch| {
        run_batch(&model, device, &faults, batch, None).map(drop)
    })?;
    tracing::info!(model = %config.name, version = %config.version, device = ?device, dtype = %config.dtype, "model loaded and warm");
    Ok(model)
}

impl Thread {
    /// Runs one batch of model `index`, timing it for the watchdog and the batcher.
    fn run(
        &mut self,
        index: usize,
        inputs: &[Vec<Tensor<'static>>],
        host: Option<&HostBatch>,
    ) -> ExecOutput {
        let started = Instant::now();
        self.state
            .busy_since_ms
            .store(jetinfer_schemas::now_ms(), Ordering::Relaxed);
        let result = match (&self.fatal, self.models.get(index).and_then(Option::as_ref)) {
            (Some(f), _) => Err(f.clone()),
            (None, Some(m)) => run_adaptive(
                m,
                self.device,
                &self.state.faults,
                inputs,
                &mut self.safe_batch[index],
                host,
            ),
            (None, None) => Ok(inputs
                .iter()
                .map(|_| Err(JobError::new(ErrorCode::Internal, "model not loaded")))
                .collect()),
        };
        self.state.busy_since_ms.store(0, Ordering::Relaxed);
        let compute_ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(outputs) => ExecOutput {
                started,
                compute_ms,
                outputs,
                fatal: None,
            },
            Err(why) => {
                if self.fatal.is_none() {
                    tracing::error!(device = %self.device_name, error = %why, "sticky device error: this device runs nothing more");
                }
                self.fatal = Some(why.clone());
                ExecOutput {
                    started,
                    compute_ms,
                    outputs: Vec::new(),
                    fatal: Some(why),
                }
            }
        }
    }
}

/// Runs a batch within the model's known safe size. Out of memory: halve, remember, retry;
/// another failure: run the jobs one by one so only the culprit fails. `Err` = sticky error.
/// `host` (the whole batch in pinned memory) serves only the first attempt.
fn run_adaptive(
    m: &Model,
    device: Device,
    faults: &Faults,
    inputs: &[Vec<Tensor<'static>>],
    safe: &mut usize,
    host: Option<&HostBatch>,
) -> Result<Vec<JobOutput>, StickyError> {
    if inputs.len() > *safe {
        let size = *safe;
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(size) {
            out.extend(run_adaptive(m, device, faults, chunk, safe, None)?);
        }
        return Ok(out);
    }
    match run_batch(m, device, faults, inputs, host) {
        Ok(outs) => Ok(outs.into_iter().map(Ok).collect()),
        Err(e) if is_sticky(&e) => Err(StickyError(e)),
        Err(e) if inputs.len() == 1 => Ok(vec![Err(e)]),
        Err(e) if e.code == ErrorCode::ResourceExhausted => {
            *safe = (inputs.len() / 2).max(1);
            tracing::warn!(model = %m.config.name, batch = inputs.len(), safe_batch = *safe, "out of device memory; splitting the batch");
            run_adaptive(m, device, faults, inputs, safe, None)
        }
        Err(e) => {
            tracing::warn!(model = %m.config.name, jobs = inputs.len(), error = %e, "batch failed; running its jobs one by one");
            let mut out = Vec::with_capacity(inputs.len());
            for one in inputs.chunks(1) {
                out.extend(run_adaptive(m, device, faults, one, safe, None)?);
            }
            Ok(out)
        }
    }
}

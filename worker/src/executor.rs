//! The executor: OS threads that own a device's TorchScript modules and run their batches
//! under no-grad, one batch at a time per thread.
//!
//! A device has one thread per instance (`instances` in the models file, see
//! docs/models.md): thread 0 loads and warms the device's models, the others run the same
//! modules (one copy of the weights: tch's `CModule` is `Send + Sync`, and a TorchScript
//! module in eval mode under no-grad may run forwards from several threads at once; each
//! thread keeps its own no-grad guard, batch-size memory and sticky-error state). Each
//! thread is one *lane* ([`Lane`]): a model's batcher hands a batch to its least busy lane.
//!
//! On a CUDA device with more than one thread, each thread makes a pooled stream of the
//! device its current stream (`cuda_stream.rs`: tch has no stream API, so the two libtorch
//! functions are called directly), so the instances' kernels and copies can overlap on the
//! GPU; a libtorch without those functions leaves them on the default stream (logged),
//! where only their host-side work overlaps. A single thread keeps the default stream.
//!
//! Batches arrive on a bounded channel per thread (capacity 1: one batch runs, the next
//! waits ready, as in text-embeddings-inference), so the batchers feel backpressure instead
//! of piling up work. A batch whose forward fails is re-run job by job, so one job the
//! model chokes on does not fail its batch-mates. A batch that runs out of device memory is
//! split in halves and retried, and the thread remembers the size that fit; only a job that
//! alone does not fit gets `resource_exhausted`. A sticky CUDA error (illegal address,
//! device assert) leaves the context unusable: the thread reports it as fatal and runs
//! nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::staging::{HostBatch, PinnedPool};
use crate::torch_error::is_sticky;

#[path = "cuda_stream.rs"]
mod cuda_stream;

/// Per model (in the order given), whether it loaded.
pub(crate) type LoadReport = Vec<Result<(), LoadError>>;

/// What the device's threads share with the rest of the worker.
#[derive(Clone, Default)]
pub(crate) struct DeviceState {
    /// Unix ms when the oldest running forward of the device's threads started; 0 while
    /// all are idle (read by the watchdog).
    pub busy_since_ms: Arc<AtomicU64>,
    pub faults: Arc<Faults>,
    /// Batches handed to thread 0 (instance 0) and not finished (the batchers' idle
    /// signal); the other instances count theirs in their own [`Lane`].
    pub load: DeviceLoad,
    /// Pinned host buffers the batchers write batches into (CUDA devices only), shared by
    /// the device's instances (each batch takes its own buffers).
    pub pinned: Option<Arc<PinnedPool>>,
    /// Time the device's threads spend in forwards (shared by every thread and version
    /// on the device; read by the heartbeat).
    pub busy: Arc<crate::meters::BusyMeter>,
    /// Cancelled once every thread of the device has ended and the modules are dropped
    /// (every batch sender gone: how a version is unloaded, see lifecycle.rs).
    pub exited: tokio_util::sync::CancellationToken,
}

/// One executor thread as a model's batcher sees it: where its batches go, how busy it
/// is, and which device and instance it is (for metrics and spans).
#[derive(Clone)]
pub(crate) struct Lane {
    pub device: String,
    /// 0 for the thread that loaded the models, then 1, 2, … per extra instance.
    pub instance: u32,
    /// The model's index among the thread's models.
    pub exec_index: usize,
    pub exec: mpsc::Sender<ExecBatch>,
    /// Batches handed to this thread and not finished.
    pub load: DeviceLoad,
    pub pinned: Option<Arc<PinnedPool>>,
}

/// The threads of one device: per thread, its lane and which models it runs.
pub(crate) struct DeviceExec {
    threads: Vec<(Lane, Vec<bool>)>,
}

impl DeviceExec {
    /// The lanes that run model `index` (of the configs given to [`spawn_device`]): one per
    /// instance.
    pub fn lanes_for(&self, index: usize) -> Vec<Lane> {
        self.threads
            .iter()
            .filter(|(_, runs)| runs.get(index).copied().unwrap_or(false))
            .map(|(lane, _)| Lane {
                exec_index: index,
                ..lane.clone()
            })
            .collect()
    }
}

/// The watchdog's clock over several threads: each thread's start (0 idle), and the oldest
/// published in the device's `busy_since_ms`, so a hung thread is seen even while another
/// keeps finishing batches.
struct BusyClocks {
    starts: Mutex<Vec<u64>>,
    oldest: Arc<AtomicU64>,
}

impl BusyClocks {
    fn set(&self, thread: usize, ms: u64) {
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts[thread] = ms;
        let oldest = starts
            .iter()
            .copied()
            .filter(|&s| s != 0)
            .min()
            .unwrap_or(0);
        self.oldest.store(oldest, Ordering::Relaxed);
    }
}

/// Cancels the device's `exited` when the last thread lets go of it (each drops its
/// modules first).
struct ExitSignal(tokio_util::sync::CancellationToken);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// One executor thread's models and what it knows about them.
struct Thread {
    device_name: String,
    device: Device,
    /// Which of the device's threads (its clock slot).
    index: usize,
    clocks: Arc<BusyClocks>,
    busy: Arc<crate::meters::BusyMeter>,
    load: DeviceLoad,
    faults: Arc<Faults>,
    models: Vec<Option<Arc<Model>>>,
    /// Per model, the largest batch known to fit in device memory.
    safe_batch: Vec<usize>,
    /// The sticky error that ended this thread, once one happened.
    fatal: Option<StickyError>,
    /// Whether the device has several threads: each then runs on its own CUDA stream.
    own_stream: bool,
}

/// Starts the threads of one device: thread 0 loads and warms its models, then starts one
/// more thread per extra instance (`instances` of each config: how many threads run that
/// model here), sharing the loaded modules. Returns the lanes and, per model (in order),
/// whether it loaded.
pub(crate) fn spawn_device(
    device_name: String,
    configs: Vec<ModelConfig>,
    state: DeviceState,
) -> (DeviceExec, oneshot::Receiver<LoadReport>) {
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let threads = configs
        .iter()
        .map(|c| c.instances.max(1) as usize)
        .max()
        .unwrap_or(1);
    let clocks = Arc::new(BusyClocks {
        starts: Mutex::new(vec![0; threads]),
        oldest: state.busy_since_ms.clone(),
    });
    if let Some(pool) = &state.pinned {
        pool.keep_for_instances(threads);
    }
    let mut lanes = Vec::with_capacity(threads);
    let mut receivers = Vec::with_capacity(threads);
    for k in 0..threads {
        let (tx, rx) = mpsc::channel::<ExecBatch>(1);
        let load = if k == 0 {
            state.load.clone()
        } else {
            DeviceLoad::default()
        };
        let runs = configs
            .iter()
            .map(|c| (c.instances.max(1) as usize) > k)
            .collect();
        let lane = Lane {
            device: device_name.clone(),
            instance: k as u32,
            exec_index: 0,
            exec: tx,
            load: load.clone(),
            pinned: state.pinned.clone(),
        };
        lanes.push((lane, runs));
        receivers.push((rx, load));
    }
    let instances: Vec<u32> = configs.iter().map(|c| c.instances.max(1)).collect();
    let exit = Arc::new(ExitSignal(state.exited.clone()));
    let faults = state.faults.clone();
    let busy = state.busy.clone();
    std::thread::Builder::new()
        .name(format!("exec-{device_name}"))
        .spawn(move || {
            let device = parse_device(&device_name);
            apply_jit_settings();
            let (models, report) = load_all(&device, configs);
            let _ = loaded_tx.send(report);
            let Ok(device) = device else { return };
            let models: Vec<Option<Arc<Model>>> =
                models.into_iter().map(|m| m.map(Arc::new)).collect();
            let mut receivers = receivers.into_iter();
            let (rx0, load0) = receivers.next().expect("one thread at least");
            let make = |index: usize, load: DeviceLoad| Thread {
                device_name: device_name.clone(),
                device,
                index,
                clocks: clocks.clone(),
                busy: busy.clone(),
                load,
                faults: faults.clone(),
                // Thread k runs the models with more than k instances.
                models: models
                    .iter()
                    .zip(&instances)
                    .map(|(m, &n)| m.clone().filter(|_| n as usize > index))
                    .collect(),
                safe_batch: models
                    .iter()
                    .map(|m| m.as_ref().map_or(1, |m| m.config.max_batch_size as usize))
                    .collect(),
                fatal: None,
                own_stream: threads > 1,
            };
            if let (Device::Cuda(d), true) = (device, threads > 1) {
                // The other threads' streams do not wait for the default stream, where the
                // weights were copied and warmed: let that work finish first.
                tch::Cuda::synchronize(d as i64);
            }
            for (k, (rx, load)) in receivers.enumerate() {
                let thread = make(k + 1, load);
                let exit = exit.clone();
                std::thread::Builder::new()
                    .name(format!("exec-{device_name}-{}", k + 1))
                    .spawn(move || serve(thread, rx, exit))
                    .expect("spawning an executor thread failed: out of resources");
            }
            let thread = make(0, load0);
            drop(models);
            serve(thread, rx0, exit);
        })
        .expect("spawning the executor thread failed: out of resources");
    (DeviceExec { threads: lanes }, loaded_rx)
}

/// Runs the batches handed to one thread until every sender is gone, then drops the
/// thread's modules and its share of the exit signal.
fn serve(mut thread: Thread, mut rx: mpsc::Receiver<ExecBatch>, exit: Arc<ExitSignal>) {
    apply_jit_settings();
    let _guard = tch::no_grad_guard();
    if let (Device::Cuda(d), true) = (thread.device, thread.own_stream) {
        match cuda_stream::use_own_stream(d) {
            Some(id) => {
                tracing::info!(device = %thread.device_name, instance = thread.index, stream = id, "executor thread runs on its own CUDA stream")
            }
            None => {
                tracing::warn!(device = %thread.device_name, instance = thread.index, "libtorch offers no CUDA stream API here: this instance shares the default stream (its kernels do not overlap the others')")
            }
        }
    }
    while let Some(batch) = rx.blocking_recv() {
        let output = thread.run(batch.model, &batch.inputs, batch.host.as_ref());
        // The outputs came back: every copy of the host batch has finished, so its
        // pinned buffers may be written again.
        drop(batch.host);
        thread.load.finished();
        let _ = batch.reply.send(output);
    }
    // Every sender is gone: free this thread's hold on the modules, then say so (the last
    // thread's signal cancels the device's `exited`).
    drop(thread);
    drop(exit);
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
    if config.sim.is_some() {
        // Simulated: nothing to load or warm (sim.rs).
        tracing::info!(model = %config.name, version = %config.version, sim = ?config.sim, "simulated model ready");
        return Ok(Model {
            config: config.clone(),
            module: None,
        });
    }
    let module = Some(load_for_serving(config, device)?);
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
        self.clocks.set(self.index, jetinfer_schemas::now_ms());
        self.busy.begin();
        let result = match (&self.fatal, self.models.get(index).and_then(Option::as_ref)) {
            (Some(f), _) => Err(f.clone()),
            (None, Some(m)) => run_adaptive(
                m,
                self.device,
                &self.faults,
                inputs,
                &mut self.safe_batch[index],
                host,
            ),
            (None, None) => Ok(inputs
                .iter()
                .map(|_| Err(JobError::new(ErrorCode::Internal, "model not loaded")))
                .collect()),
        };
        self.busy.end();
        self.clocks.set(self.index, 0);
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
                    tracing::error!(device = %self.device_name, instance = self.index, error = %why, "sticky device error: this device runs nothing more");
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

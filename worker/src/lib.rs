//! The jetinfer worker: runs TorchScript models through libtorch (tch) for jobs that
//! dispatchers send it.
//!
//! Layout, in the order a job meets it:
//! - [`service`]: a run request from a dispatcher → decode, check against the model's
//!   input spec ([`spec`]), answer invalid/expired/unknown/cached jobs directly, queue the
//!   rest; reply once every result is stored.
//! - [`batcher`]: one task per model forms dynamic batches (max size, max queue delay).
//! - [`executor`]: one OS thread per device owns the modules and runs batches (no-grad).
//! - [`results`]: one Redis pipeline per batch (`SET NX`, cache), completion notices.
//! - [`heartbeat`]: announces models and free slots every second.
//!
//! [`config`] holds the flags and the models TOML.

pub mod ceiling;
pub mod config;

mod batch_time;
mod batcher;
mod device_load;
mod executor;
pub mod faults;
mod heartbeat;
mod job;
mod pad;
mod results;
mod service;
mod spec;
// Observability (issue 5): spans, metrics, health endpoint, GPU memory.
mod gpu;
mod http;
pub mod telemetry;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_schemas::names::worker_run_subject;
use jetinfer_schemas::worker::ModelInfo;
use jetinfer_schemas::{Keys, Limits};
use jetinfer_store::{ResultStore, StoreConfig};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ModelConfig, ModelsFile};

/// Whether libtorch in this process can use CUDA (false when libtorch_cuda was dropped at
/// link time, or there is no GPU).
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Runs a worker until `shutdown` is cancelled, then drains: stops taking work, finishes
/// what it holds (within `--drain-ms`), and exits.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let id = config
        .id
        .clone()
        .unwrap_or_else(|| format!("worker-{:08x}", rand::random::<u32>()));
    tracing::info!(id = %id, cuda = cuda_available(), cuda_devices = tch::Cuda::device_count(), config = ?config, "starting worker");
    let file = ModelsFile::load(&config.models)?;

    let nats = config
        .connect
        .nats()
        .name(&id)
        .retry_on_initial_connect()
        .connect()
        .await?;
    let mut store_config = StoreConfig::new(config.connect.redis_url());
    store_config.keys = Keys::new(&config.key_prefix);
    store_config.result_ttl = Duration::from_secs(config.result_ttl_s);
    store_config.cache_ttl = Duration::from_secs(config.cache_ttl_s);
    let store = ResultStore::new(&store_config)?;
    // Up before the models load (so /healthz answers during warm-up), and until exit (so
    // /readyz reports the drain).
    let ops = http::start(
        &config,
        &id,
        nats.clone(),
        store.clone(),
        CancellationToken::new(),
    )
    .await?;
    let writer = results::Writer {
        store: store.clone(),
        nats: nats.clone(),
        worker_id: id.clone(),
        record_executions: config.record_executions,
        abort_after_writes: None,
        writes: Default::default(),
    };
    let faults = faults::Faults::parse(config.inject_faults.as_deref().unwrap_or(""))
        .map_err(anyhow::Error::msg)?;
    let writer = results::Writer {
        abort_after_writes: faults.exit_after_store,
        ..writer
    };
    if !faults.is_empty() {
        tracing::warn!(
            ?faults,
            "fault injection is ON: this worker fails on purpose"
        );
    }
    let faults = Arc::new(faults);
    // Cancelled on a sticky device error: stop taking work and exit non-zero.
    let fatal = CancellationToken::new();
    let mut device_states = Vec::new();

    // Load every model on its device's thread; a model that fails is refused, the rest served.
    let verified: Vec<ModelConfig> = file.models.into_iter().filter(verify_sha256).collect();
    let mut by_device: BTreeMap<String, Vec<ModelConfig>> = BTreeMap::new();
    for m in verified {
        by_device.entry(m.device.clone()).or_default().push(m);
    }
    let max_batch = by_device
        .values()
        .flatten()
        .map(|m| m.max_batch_size)
        .max()
        .unwrap_or(1);
    let slots = config.slots.unwrap_or(max_batch * 2).max(1);
    let batchers = TaskTracker::new();
    let mut models = Vec::new();
    let mut devices = Vec::new();
    for (device, configs) in by_device {
        let state = executor::DeviceState {
            faults: faults.clone(),
            ..Default::default()
        };
        device_states.push((device.clone(), state.clone()));
        let (exec, loaded) = executor::spawn_device(device.clone(), configs.clone(), state.clone());
        let loaded = loaded.await.unwrap_or_default();
        for (index, (m, ok)) in configs.into_iter().zip(loaded).enumerate() {
            if let Err(why) = ok {
                tracing::error!(model = %m.name, version = %m.version, device = %device, why, "model refused; serving the others");
                continue;
            }
            telemetry::model_device(&m.name, &device);
            let (queue, rx) = mpsc::channel(slots as usize);
            let batch_time = Arc::new(batch_time::BatchTime::default());
            let batcher = batcher::Batcher {
                model: m.name.clone(),
                exec_index: index,
                max_batch_size: m.max_batch_size as usize,
                max_queue_delay: Duration::from_millis(m.max_queue_delay_ms),
                pad: m.pad.is_some(),
                exec: exec.clone(),
                writer: writer.clone(),
                tasks: batchers.clone(),
                batch_time: batch_time.clone(),
                fatal: fatal.clone(),
                load: state.load.clone(),
            };
            batchers.spawn(batcher.run(rx));
            let info = ModelInfo {
                name: m.name,
                version: m.version,
                max_batch_size: m.max_batch_size,
                inputs: m.inputs,
                batch_ms: None,
            };
            models.push(service::ServedModel {
                info,
                queue,
                batch_time,
            });
        }
        devices.push(device);
    }
    anyhow::ensure!(
        !models.is_empty(),
        "no model could be loaded; see the errors above"
    );

    let free = Arc::new(Semaphore::new(slots as usize));
    let accepting = Arc::new(AtomicBool::new(true));
    let announcer = heartbeat::Announcer {
        nats: nats.clone(),
        worker: id.clone(),
        models: models
            .iter()
            .map(|m| (m.info.clone(), m.batch_time.clone()))
            .collect(),
        devices,
        slots,
        free: free.clone(),
        accepting: accepting.clone(),
    };
    ops.models_ready(
        models.iter().map(|m| {
            (
                m.info.name.clone(),
                m.info.version.clone(),
                telemetry::device_of(&m.info.name),
            )
        }),
        slots,
        accepting.clone(),
    );
    let service = Arc::new(service::Service {
        models,
        slots: free,
        accepting: accepting.clone(),
        writer,
        store,
        limits: Limits::default(),
    });

    let mut requests = nats.subscribe(worker_run_subject(&id)).await?;
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(announcer.run(
        Duration::from_millis(config.heartbeat_ms),
        heartbeat_stop.clone(),
    ));
    tokio::spawn(watchdog(
        device_states,
        Duration::from_millis(config.forward_timeout_ms),
    ));
    tracing::info!(id = %id, slots, "worker ready");

    let in_flight = TaskTracker::new();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = fatal.cancelled() => break,
            m = requests.next() => m,
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply else { continue };
        let (service, nats) = (service.clone(), nats.clone());
        in_flight.spawn(async move { service.handle(&nats, reply, msg.payload).await });
    }

    // Drain: announce "not accepting", stop listening, finish what we hold.
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    // Requests already on their way are answered (all `retry`: we no longer accept), not
    // dropped: a dropped request would cost its jobs a timeout and a counted failure.
    if requests.drain().await.is_ok() {
        let leftovers = async {
            while let Some(msg) = requests.next().await {
                if let Some(reply) = msg.reply {
                    service.handle(&nats, reply, msg.payload).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), leftovers).await;
    }
    in_flight.close();
    // After a sticky device error nothing more can run here: hand back quickly and exit, so
    // the supervisor's replacement takes over, rather than idling through a full drain.
    let drain = if fatal.is_cancelled() {
        FATAL_DRAIN
    } else {
        Duration::from_millis(config.drain_ms)
    };
    if tokio::time::timeout(drain, in_flight.wait()).await.is_err() {
        tracing::warn!("drain deadline passed; unfinished jobs will be dispatched again");
    }
    let _ = nats.flush().await;
    if fatal.is_cancelled() {
        // The supervisor restarts us with a fresh CUDA context.
        anyhow::bail!(
            "worker {id} stopped after a sticky device error; its jobs go to other workers"
        );
    }
    tracing::info!(id = %id, "worker stopped");
    Ok(())
}

/// A forward that runs longer than `limit` is hung (a CUDA call cannot be cancelled): the
/// only way out is to exit, so the dispatcher re-dispatches the jobs to other workers.
async fn watchdog(devices: Vec<(String, executor::DeviceState)>, limit: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(limit));
    loop {
        tick.tick().await;
        let now = jetinfer_schemas::now_ms();
        for (device, state) in &devices {
            let since = state
                .busy_since_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            if since != 0 && now.saturating_sub(since) > limit.as_millis() as u64 {
                tracing::error!(
                    device,
                    running_ms = now - since,
                    limit_ms = limit.as_millis() as u64,
                    "forward hung; exiting"
                );
                std::process::exit(EXIT_HUNG);
            }
        }
    }
}

/// How long a worker with an unusable device waits for its requests to answer.
const FATAL_DRAIN: Duration = Duration::from_secs(2);

/// Exit status of a worker whose forward hung.
pub const EXIT_HUNG: i32 = 3;

/// Checks a model file against its configured SHA-256; a mismatch refuses the model.
fn verify_sha256(m: &ModelConfig) -> bool {
    let Some(want) = &m.sha256 else { return true };
    match std::fs::read(&m.path) {
        Ok(bytes) => {
            let got = hex::encode(Sha256::digest(&bytes));
            if got.eq_ignore_ascii_case(want) {
                true
            } else {
                tracing::error!(model = %m.name, path = %m.path.display(), want, got, "sha256 mismatch; model refused");
                false
            }
        }
        Err(e) => {
            tracing::error!(model = %m.name, path = %m.path.display(), error = %e, "cannot read model file; model refused");
            false
        }
    }
}

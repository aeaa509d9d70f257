//! Bringing the models up: checks each model file, starts one executor thread per device
//! (which loads and warms its models), and one batcher per model that loaded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jetinfer_schemas::worker::ModelInfo;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch_time::BatchTime;
use crate::batcher::Batcher;
use crate::config::ModelConfig;
use crate::exec_batch::ExecBatch;
use crate::executor::{spawn_device, DeviceState};
use crate::faults::Faults;
use crate::loading::LoadError;
use crate::results::Writer;
use crate::roster::Served;

/// What loading gives the rest of the worker.
pub(crate) struct Started {
    /// The models that loaded, with their batcher queues.
    pub models: Vec<Served>,
    /// Every device in the models file.
    pub devices: Vec<String>,
    /// Each device's state, for the watchdog.
    pub device_states: Vec<(String, DeviceState)>,
    pub slots: u32,
}

/// What every batcher shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub writer: Writer,
    pub faults: Arc<Faults>,
    /// Cancelled on a sticky device error.
    pub fatal: CancellationToken,
    pub batchers: TaskTracker,
}

/// Loads every model on its device's thread; a model that fails is refused, the rest
/// served. `slots`: `--slots`, or twice the largest batch.
pub(crate) async fn start_models(
    models: Vec<ModelConfig>,
    slots: Option<u32>,
    shared: &Shared,
) -> Started {
    let mut by_device: BTreeMap<String, Vec<ModelConfig>> = BTreeMap::new();
    for m in models.into_iter().filter(verify_sha256) {
        by_device.entry(m.device.clone()).or_default().push(m);
    }
    let max_batch = by_device
        .values()
        .flatten()
        .map(|m| m.max_batch_size)
        .max()
        .unwrap_or(1);
    let slots = slots.unwrap_or(max_batch * 2).max(1);
    let mut started = Started {
        models: Vec::new(),
        devices: Vec::new(),
        device_states: Vec::new(),
        slots,
    };
    for (device, configs) in by_device {
        start_device(&device, configs, shared, &mut started).await;
        started.devices.push(device);
    }
    started
}

/// Starts one device's thread and, once it has loaded, a batcher per loaded model.
async fn start_device(
    device: &str,
    configs: Vec<ModelConfig>,
    shared: &Shared,
    started: &mut Started,
) {
    let state = DeviceState {
        faults: shared.faults.clone(),
        pinned: crate::loading::parse_device(device)
            .ok()
            .and_then(crate::staging::PinnedPool::for_device),
        ..Default::default()
    };
    started
        .device_states
        .push((device.to_string(), state.clone()));
    let (exec, loaded) = spawn_device(device.to_string(), configs.clone(), state.clone());
    let loaded = loaded.await.unwrap_or_default();
    for (index, (m, ok)) in configs.into_iter().zip(loaded).enumerate() {
        if let Err(why) = ok {
            tracing::error!(model = %m.name, version = %m.version, device = %device, why = %why, "model refused; serving the others");
            continue;
        }
        let (queue, rx) = mpsc::channel(started.slots as usize);
        let batch_time = Arc::new(BatchTime::default());
        let batcher = batcher(&m, device, index, &exec, &state, &batch_time, shared);
        shared.batchers.spawn(batcher.run(rx));
        started.models.push(Served {
            info: ModelInfo {
                name: m.name,
                version: m.version,
                max_batch_size: m.max_batch_size,
                inputs: m.inputs,
                batch_ms: None,
            },
            device: device.to_string(),
            batch_time,
            queue,
        });
    }
}

/// The batcher of model `m`, which is model `exec_index` of its device thread `exec`.
pub(crate) fn batcher(
    m: &ModelConfig,
    device: &str,
    exec_index: usize,
    exec: &mpsc::Sender<ExecBatch>,
    state: &DeviceState,
    batch_time: &Arc<BatchTime>,
    shared: &Shared,
) -> Batcher {
    Batcher {
        model: m.name.clone(),
        version: m.version.clone(),
        device: device.to_string(),
        exec_index,
        max_batch_size: m.max_batch_size as usize,
        max_queue_delay: Duration::from_millis(m.max_queue_delay_ms),
        pad: m.pad.is_some(),
        config: Arc::new(m.clone()),
        pinned: state.pinned.clone(),
        exec: exec.clone(),
        writer: shared.writer.clone(),
        tasks: shared.batchers.clone(),
        batch_time: batch_time.clone(),
        fatal: shared.fatal.clone(),
        load: state.load.clone(),
    }
}

/// Checks a model file against its configured SHA-256; a mismatch refuses the model.
fn verify_sha256(m: &ModelConfig) -> bool {
    match check_sha256(m) {
        Ok(()) => true,
        Err(why) => {
            tracing::error!(model = %m.name, version = %m.version, path = %m.path.display(), why = %why, "model refused");
            false
        }
    }
}

/// Whether the model file can be read and has its configured SHA-256 (none configured:
/// any file); the error says which and why, for logs and `/readyz`.
pub(crate) fn check_sha256(m: &ModelConfig) -> Result<(), LoadError> {
    let Some(want) = &m.sha256 else {
        return Ok(());
    };
    let bytes = std::fs::read(&m.path).map_err(|source| LoadError::Read {
        path: m.path.clone(),
        source,
    })?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(LoadError::Sha256 {
            path: m.path.clone(),
            got,
            want: want.clone(),
        })
    }
}

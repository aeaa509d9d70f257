//! Bringing the models up: checks each model file, starts each device's executor threads
//! (the first loads and warms its models; one more per extra instance), and one batcher
//! per model that loaded, over all its devices and instances.

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
use crate::executor::{spawn_device, DeviceState, Lane};
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

/// Loads every model on its device's threads; a model that fails is refused, the rest
/// served. `slots`: `--slots`, or the largest `max_batch_size × (threads + 1)` of a model.
///
/// Entries of one name and version form one model (the file checked that they agree): its
/// batcher hands batches to every device it is listed on, each with as many threads as the
/// entries there ask for (`instances`, summed over repeated entries).
pub(crate) async fn start_models(
    models: Vec<ModelConfig>,
    slots: Option<u32>,
    shared: &Shared,
) -> Started {
    // Per model (in file order): its settings and, per device, its instances there.
    let mut merged: Vec<(ModelConfig, BTreeMap<String, u32>)> = Vec::new();
    for m in models.into_iter().filter(verify_sha256) {
        let at = merged
            .iter()
            .position(|(c, _)| c.name == m.name && c.version == m.version);
        let at = at.unwrap_or_else(|| {
            merged.push((m.clone(), BTreeMap::new()));
            merged.len() - 1
        });
        let n = merged[at].1.entry(m.device.clone()).or_insert(0);
        *n = (*n + m.instances).min(crate::config::MAX_INSTANCES);
    }
    let mut by_device: BTreeMap<String, Vec<(usize, ModelConfig)>> = BTreeMap::new();
    for (i, (m, devices)) in merged.iter().enumerate() {
        for (device, &instances) in devices {
            let config = ModelConfig {
                device: device.clone(),
                instances,
                ..m.clone()
            };
            by_device
                .entry(device.clone())
                .or_default()
                .push((i, config));
        }
    }
    // Per model, a batch running on each of its threads and one forming: with one thread,
    // twice its largest batch, as before.
    let needed = merged
        .iter()
        .map(|(m, devices)| m.max_batch_size * (devices.values().sum::<u32>() + 1))
        .max()
        .unwrap_or(1);
    let slots = slots.unwrap_or(needed).max(1);
    let mut started = Started {
        models: Vec::new(),
        devices: Vec::new(),
        device_states: Vec::new(),
        slots,
    };
    let mut lanes: Vec<Vec<Lane>> = vec![Vec::new(); merged.len()];
    for (device, configs) in by_device {
        start_device(&device, configs, shared, &mut started, &mut lanes).await;
        started.devices.push(device);
    }
    for ((m, _), lanes) in merged.into_iter().zip(lanes) {
        if lanes.is_empty() {
            continue;
        }
        let mut devices: Vec<String> = lanes.iter().map(|l| l.device.clone()).collect();
        devices.dedup();
        let (queue, rx) = mpsc::channel(started.slots as usize);
        let batch_time = Arc::new(BatchTime::default());
        tracing::info!(model = %m.name, version = %m.version, devices = ?devices, threads = lanes.len(), "model served");
        let batcher = batcher_on(&m, lanes, &batch_time, shared);
        shared.batchers.spawn(batcher.run(rx));
        started.models.push(Served {
            info: ModelInfo {
                name: m.name,
                version: m.version,
                max_batch_size: m.max_batch_size,
                inputs: m.inputs,
                batch_ms: None,
            },
            device: devices.join(","),
            batch_time,
            queue,
        });
    }
    started
}

/// Starts one device's threads and, once they have loaded, adds the lanes of each model
/// that loaded there to `lanes` (indexed like the merged models).
async fn start_device(
    device: &str,
    configs: Vec<(usize, ModelConfig)>,
    shared: &Shared,
    started: &mut Started,
    lanes: &mut [Vec<Lane>],
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
    let (models, configs): (Vec<usize>, Vec<ModelConfig>) = configs.into_iter().unzip();
    let (exec, loaded) = spawn_device(device.to_string(), configs.clone(), state);
    let loaded = loaded.await.unwrap_or_default();
    for (index, ((model, m), ok)) in models.into_iter().zip(configs).zip(loaded).enumerate() {
        if let Err(why) = ok {
            tracing::error!(model = %m.name, version = %m.version, device = %device, why = %why, "model refused on this device; serving the others");
            continue;
        }
        lanes[model].extend(exec.lanes_for(index));
    }
}

/// The batcher of model `m` over its executor threads `lanes` (every device and instance).
pub(crate) fn batcher_on(
    m: &ModelConfig,
    lanes: Vec<Lane>,
    batch_time: &Arc<BatchTime>,
    shared: &Shared,
) -> Batcher {
    Batcher {
        model: m.name.clone(),
        version: m.version.clone(),
        lanes,
        max_batch_size: m.max_batch_size as usize,
        max_queue_delay: Duration::from_millis(m.max_queue_delay_ms),
        linger: Duration::from_millis(m.linger_ms),
        pad: m.pad.is_some(),
        config: Arc::new(m.clone()),
        writer: shared.writer.clone(),
        tasks: shared.batchers.clone(),
        batch_time: batch_time.clone(),
        fatal: shared.fatal.clone(),
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

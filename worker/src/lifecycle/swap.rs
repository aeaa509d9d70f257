//! The two halves of a version's life on this worker: [`load`] (sha256, an executor thread
//! per device, warm-up, its batcher) and [`unload`] (wait for its threads to end, then log
//! what memory came back).

use std::sync::Arc;
use std::time::Instant;

use jetinfer_schemas::worker::ModelInfo;
use tokio::sync::mpsc;

use super::{Running, Watched};
use crate::batch_time::BatchTime;
use crate::config::ModelConfig;
use crate::executor::{spawn_device, DeviceState};
use crate::loading::LoadError;
use crate::placement::{Key, Wanted};
use crate::roster::Served;
use crate::startup::{batcher_on, check_sha256, Shared};

/// Checks the file, loads and warms the version on a new executor thread on each of its
/// devices, and starts its batcher over those that loaded.
pub(super) async fn load(
    key: &Key,
    wanted: Wanted,
    states: Vec<(String, DeviceState)>,
    slots: u32,
    shared: &Shared,
) -> Result<(Served, Running), LoadError> {
    let config = wanted.config;
    let checked = config.clone();
    tokio::task::spawn_blocking(move || check_sha256(&checked))
        .await
        .map_err(|_| LoadError::ExecutorGone)??;
    let (mut lanes, mut loaded, mut first_error) = (Vec::new(), Vec::new(), None);
    for (device, state) in states {
        let on_device = ModelConfig {
            device: device.clone(),
            ..config.clone()
        };
        // The lanes hold the thread's senders: once the batcher (their only holder) ends,
        // the thread runs what it was handed, then ends and drops the module.
        let (exec, report) = spawn_device(device.clone(), vec![on_device], state.clone());
        let result = match report.await {
            Ok(mut report) if !report.is_empty() => report.remove(0),
            _ => Err(LoadError::ExecutorGone),
        };
        match result {
            Ok(()) => {
                lanes.extend(exec.lanes_for(0));
                loaded.push((device, state));
            }
            Err(e) => {
                tracing::error!(model = %key.name, version = %key.version, device = %device, load_error = %e, "model version refused on this device");
                first_error.get_or_insert(e);
            }
        }
    }
    if lanes.is_empty() {
        return Err(first_error.unwrap_or(LoadError::ExecutorGone));
    }
    let (queue, rx) = mpsc::channel(slots.max(1) as usize);
    let batch_time = Arc::new(BatchTime::default());
    let batcher = shared
        .batchers
        .spawn(batcher_on(&config, lanes, &batch_time, shared).run(rx));
    let served = Served {
        info: ModelInfo {
            name: config.name,
            version: config.version,
            max_batch_size: config.max_batch_size,
            inputs: config.inputs,
            batch_ms: None,
        },
        device: loaded
            .iter()
            .map(|(d, _)| d.as_str())
            .collect::<Vec<_>>()
            .join(","),
        batch_time,
        queue,
    };
    let running = Running {
        batcher,
        states: loaded,
        placed_on: wanted.devices,
    };
    Ok((served, running))
}

/// Lets the version's queued and running batches finish, then waits for its thread to
/// drop the module; logs the memory before and after.
pub(super) async fn unload(key: &Key, served: Served, running: Running, watched: &Watched) {
    let started = Instant::now();
    let devices: Vec<String> = running.states.iter().map(|(d, _)| d.clone()).collect();
    let (rss_before, cuda_before) = (rss_bytes(), crate::gpu::used_bytes(&devices));
    // The roster's sender was the last long-lived one: the batcher ends once the jobs
    // admitted before are batched and handed to the executor.
    drop(served);
    let _ = running.batcher.await;
    for (_, state) in &running.states {
        state.exited.cancelled().await;
    }
    watched
        .lock()
        .expect("watchdog list poisoned")
        .retain(|(_, s)| {
            !running
                .states
                .iter()
                .any(|(_, r)| Arc::ptr_eq(&s.busy_since_ms, &r.busy_since_ms))
        });
    let (rss_after, cuda_after) = (rss_bytes(), crate::gpu::used_bytes(&devices));
    tracing::info!(
        model = %key.name,
        version = %key.version,
        devices = %devices.join(","),
        drain_ms = started.elapsed().as_millis() as u64,
        rss_before,
        rss_after,
        cuda_used_before = cuda_before,
        cuda_used_after = cuda_after,
        "model unloaded: its batches finished and the module is dropped"
    );
}

/// The process's resident set size, bytes (Linux; `None` elsewhere).
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

//! Heartbeats: every period the worker announces its models, slots and devices on
//! `jetinfer.workers.<id>.heartbeat`; dispatchers route by them and declare it dead when they stop.
//! Each also carries the load the worker measured (`meters.rs`): per model its served rate,
//! busy share and capacity, per device its busy share and memory; the same figures go to
//! the worker's gauges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetinfer_schemas::names::heartbeat_subject;
use jetinfer_schemas::worker::{DeviceLoad, Heartbeat, ModelLoad, WorkerLoad};
use jetinfer_schemas::{encode, now_ms, SCHEMA_VERSION};
use metrics::gauge;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Watched;
use crate::roster::RosterRx;
use crate::telemetry::{CAPACITY, DEVICE_BUSY, MODEL_BUSY, SERVED_RATE};

pub(crate) struct Announcer {
    pub nats: async_nats::Client,
    pub worker: String,
    /// The models, devices, slots and drain state to announce.
    pub roster: RosterRx,
    /// The service's free slots.
    pub free: Arc<Semaphore>,
    /// The devices' executor states, whose busy meters the load report reads.
    pub watched: Watched,
}

impl Announcer {
    pub async fn send(&self) {
        let now = Instant::now();
        // Copied out, so the snapshot is not held during the GPU query.
        let (models, slots, devices, accepting, load_errors, measured) = {
            let r = self.roster.borrow();
            (
                r.announced(),
                r.slots,
                r.devices.clone(),
                r.accepting,
                r.load_errors(),
                r.measured(now),
            )
        };
        let memory = crate::gpu::per_device(&devices);
        let busy = self.device_busy(now);
        let device_loads: Vec<DeviceLoad> = devices
            .iter()
            .zip(&memory)
            .map(|(d, m)| DeviceLoad {
                device: d.clone(),
                busy: busy.get(d).copied().unwrap_or(0.0),
                memory_used_bytes: m.map(|(used, _)| used),
                memory_total_bytes: m.map(|(_, total)| total),
            })
            .collect();
        export(&measured, &device_loads);
        let hb = Heartbeat {
            v: SCHEMA_VERSION,
            worker: self.worker.clone(),
            models,
            slots,
            free_slots: self.free.available_permits() as u32,
            gpu_memory_bytes: crate::gpu::used_sum(&memory),
            devices,
            accepting,
            sent_at_ms: now_ms(),
            load_errors,
            load: Some(WorkerLoad {
                window_s: crate::meters::WINDOW.as_secs_f64(),
                models: measured,
                devices: device_loads,
            }),
        };
        if let Err(e) = self
            .nats
            .publish(heartbeat_subject(&self.worker), encode(&hb).into())
            .await
        {
            tracing::warn!(error = %e, "heartbeat not sent");
        }
    }

    /// Each device's busy share over the window. Every executor state of one device
    /// shares its meter, so the first one per device is read (reading takes a sample).
    fn device_busy(&self, now: Instant) -> BTreeMap<String, f64> {
        let states = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut busy = BTreeMap::new();
        for (device, state) in states.iter() {
            if !busy.contains_key(device) {
                busy.insert(device.clone(), state.busy.fraction(now));
            }
        }
        busy
    }

    /// Sends a heartbeat every `period`, and at once when the roster changes (a version
    /// loaded or unloaded: dispatchers route to it, or stop, without waiting a period),
    /// until `stop`; then one last (the roster's owner has set `accepting` to false before
    /// stopping it).
    pub async fn run(self, period: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        let mut changes = self.roster.clone();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.send().await,
                Ok(()) = changes.changed() => {
                    changes.mark_unchanged();
                    self.send().await;
                }
            }
        }
        self.send().await;
        let _ = self.nats.flush().await;
    }
}

/// The measured load on the worker's own /metrics.
fn export(models: &[ModelLoad], devices: &[DeviceLoad]) {
    if !jetinfer_telemetry::prometheus::installed() {
        return;
    }
    for m in models {
        let labels = [("model", m.name.clone()), ("version", m.version.clone())];
        gauge!(SERVED_RATE, &labels).set(m.served_per_s);
        gauge!(MODEL_BUSY, &labels).set(m.busy);
        gauge!(CAPACITY, &labels).set(m.capacity_per_s.unwrap_or(f64::NAN));
    }
    for d in devices {
        gauge!(DEVICE_BUSY, "device" => d.device.clone()).set(d.busy);
    }
}

//! Heartbeats: every period the worker announces its models, slots and devices on
//! `jetinfer.workers.<id>.heartbeat`; dispatchers route by them and declare it dead when they stop.

use std::sync::Arc;
use std::time::Duration;

use jetinfer_schemas::names::heartbeat_subject;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{encode, now_ms, SCHEMA_VERSION};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::roster::RosterRx;

pub(crate) struct Announcer {
    pub nats: async_nats::Client,
    pub worker: String,
    /// The models, devices, slots and drain state to announce.
    pub roster: RosterRx,
    /// The service's free slots.
    pub free: Arc<Semaphore>,
}

impl Announcer {
    pub async fn send(&self) {
        // Copied out, so the snapshot is not held during the GPU query.
        let (models, slots, devices, accepting, load_errors) = {
            let r = self.roster.borrow();
            (
                r.announced(),
                r.slots,
                r.devices.clone(),
                r.accepting,
                r.load_errors(),
            )
        };
        let hb = Heartbeat {
            v: SCHEMA_VERSION,
            worker: self.worker.clone(),
            models,
            slots,
            free_slots: self.free.available_permits() as u32,
            gpu_memory_bytes: crate::gpu::used_bytes(&devices),
            devices,
            accepting,
            sent_at_ms: now_ms(),
            load_errors,
        };
        if let Err(e) = self
            .nats
            .publish(heartbeat_subject(&self.worker), encode(&hb).into())
            .await
        {
            tracing::warn!(error = %e, "heartbeat not sent");
        }
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

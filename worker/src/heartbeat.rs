//! Heartbeats: every period the worker announces its models, slots and devices on
//! `jetinfer.workers.heartbeat`; dispatchers route by them and declare it dead when they stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jetinfer_schemas::names::HEARTBEAT_SUBJECT;
use jetinfer_schemas::worker::{Heartbeat, ModelInfo};
use jetinfer_schemas::{encode, now_ms, SCHEMA_VERSION};
use tokio::sync::Semaphore;

use crate::batch_time::BatchTime;
use tokio_util::sync::CancellationToken;

pub(crate) struct Announcer {
    pub nats: async_nats::Client,
    pub worker: String,
    /// Each model with its recent batch time (announced as `batch_ms`).
    pub models: Vec<(ModelInfo, Arc<BatchTime>)>,
    pub devices: Vec<String>,
    pub slots: u32,
    pub free: Arc<Semaphore>,
    pub accepting: Arc<AtomicBool>,
}

impl Announcer {
    pub async fn send(&self) {
        let hb = Heartbeat {
            v: SCHEMA_VERSION,
            worker: self.worker.clone(),
            models: self
                .models
                .iter()
                .map(|(info, time)| ModelInfo {
                    batch_ms: time.get(),
                    ..info.clone()
                })
                .collect(),
            slots: self.slots,
            free_slots: self.free.available_permits() as u32,
            devices: self.devices.clone(),
            gpu_memory_bytes: crate::gpu::used_bytes(&self.devices),
            accepting: self.accepting.load(Ordering::Relaxed),
            sent_at_ms: now_ms(),
        };
        if let Err(e) = self
            .nats
            .publish(HEARTBEAT_SUBJECT, encode(&hb).into())
            .await
        {
            tracing::warn!(error = %e, "heartbeat not sent");
        }
    }

    /// Sends a heartbeat every `period` until `stop`, then one last (not accepting).
    pub async fn run(self, period: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.send().await,
            }
        }
        self.accepting.store(false, Ordering::Relaxed);
        self.send().await;
        let _ = self.nats.flush().await;
    }
}

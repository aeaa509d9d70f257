//! What this worker serves, as one snapshot: the models (with their devices and recent
//! batch times), the devices, the slots, and whether the worker accepts work.
//!
//! `lib.rs` owns the [`watch::Sender`]: it publishes the models once they are loaded and
//! `accepting = false` when the worker drains. The service, the heartbeat and the health
//! endpoint read the snapshot; none of them keeps a copy.

use std::sync::Arc;

use jetinfer_schemas::worker::ModelInfo;
use serde_json::json;
use tokio::sync::watch;

use crate::batch_time::BatchTime;

/// One served model.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    /// As announced (`batch_ms` is filled in from `batch_time` when announcing).
    pub info: ModelInfo,
    /// The device that runs it (`cpu`, `cuda:N`).
    pub device: String,
    /// Its recent batch time, written by its batcher.
    pub batch_time: Arc<BatchTime>,
}

/// The worker's models, devices, slots and drain state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Roster {
    /// In the order the service indexes its batcher queues.
    pub models: Vec<Served>,
    /// Every device in the models file, including one whose models all failed to load.
    pub devices: Vec<String>,
    pub slots: u32,
    /// False before the models are loaded and while draining.
    pub accepting: bool,
}

impl Roster {
    /// The models as announced in heartbeats, with their current batch times.
    pub fn announced(&self) -> Vec<ModelInfo> {
        self.models
            .iter()
            .map(|m| ModelInfo {
                batch_ms: m.batch_time.get(),
                ..m.info.clone()
            })
            .collect()
    }

    /// The models for the health endpoint's body: name, version and device.
    pub fn listed(&self) -> serde_json::Value {
        json!(self
            .models
            .iter()
            .map(|m| json!({"name": m.info.name, "version": m.info.version, "device": m.device}))
            .collect::<Vec<_>>())
    }

    /// Ready to serve: models loaded and accepting.
    pub fn serving(&self) -> bool {
        !self.models.is_empty() && self.accepting
    }
}

/// The owner's side: publishes changes to every reader.
pub(crate) type RosterTx = watch::Sender<Roster>;
/// A reader's side.
pub(crate) type RosterRx = watch::Receiver<Roster>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_needs_models_and_accepting() {
        let (tx, rx) = watch::channel(Roster::default());
        assert!(!rx.borrow().serving());
        let info = ModelInfo {
            name: "m".into(),
            version: "1".into(),
            max_batch_size: 4,
            inputs: vec![],
            batch_ms: None,
        };
        let batch_time = Arc::new(BatchTime::default());
        batch_time.record(3.0);
        tx.send_modify(|r| {
            r.models.push(Served {
                info,
                device: "cpu".into(),
                batch_time,
            });
            r.accepting = true;
        });
        assert!(rx.borrow().serving());
        assert_eq!(rx.borrow().announced()[0].batch_ms, Some(3.0));
        assert_eq!(rx.borrow().listed()[0]["device"], "cpu");
        tx.send_modify(|r| r.accepting = false);
        assert!(!rx.borrow().serving());
    }
}

//! What this worker serves, as one snapshot: the models (with their devices and recent
//! batch times), the devices, the slots, and whether the worker accepts work.
//!
//! `lib.rs` owns the [`watch::Sender`]: it publishes the models once they are loaded and
//! `accepting = false` when the worker drains; with `--registry`, the lifecycle task
//! (`lifecycle.rs`) adds and removes models as the registry changes. The service, the
//! heartbeat and the health endpoint read the snapshot; none of them keeps a copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jetinfer_schemas::worker::{LoadFailure, ModelInfo, ModelLoad};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::batch_time::BatchTime;
use crate::job::Pending;

/// One served model.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    /// As announced (`batch_ms` is filled in from `batch_time` when announcing).
    pub info: ModelInfo,
    /// The device that runs it (`cpu`, `cuda:N`).
    pub device: String,
    /// Its recent batch time, written by its batcher.
    pub batch_time: Arc<BatchTime>,
    /// Its batcher's queue. Removing the model from the roster drops this sender: once
    /// the jobs already admitted are queued, the batcher sees the queue close and ends.
    pub queue: mpsc::Sender<Pending>,
}

/// Where a version the registry places on this worker stands (`--registry` only).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum VersionState {
    /// Checking the file, loading and warming it; not announced yet.
    Loading,
    /// Announced and serving.
    Loaded,
    /// No longer announced; its queued and running batches finish, then it is dropped.
    Unloading,
    /// Refused (file unreadable, sha256 mismatch, libtorch error): the reason.
    Failed(String),
}

/// One version on one device, as the registry places it on this worker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lifecycle {
    pub name: String,
    pub version: String,
    pub device: String,
    pub state: VersionState,
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
    /// Whether the models follow the registry (`--registry`).
    pub registry: bool,
    /// `--registry`: every version placed here and where it stands (empty otherwise).
    pub lifecycle: Vec<Lifecycle>,
    /// `--registry`: each model's default version, which jobs naming no version run on
    /// when this worker serves it.
    pub defaults: HashMap<String, String>,
    /// Versions this worker stopped serving (unloaded, or no longer declared): a job for
    /// one is sent back (`retry`) rather than answered `unknown_model`, since it reached
    /// us only because its dispatcher had not yet heard the heartbeat without it.
    pub retired: Vec<(String, String)>,
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

    /// What each model's load meter measured over the window ending `now`.
    pub fn measured(&self, now: std::time::Instant) -> Vec<ModelLoad> {
        self.models
            .iter()
            .map(|m| {
                let r = m.batch_time.meter().read(now, m.info.max_batch_size);
                ModelLoad {
                    name: m.info.name.clone(),
                    version: m.info.version.clone(),
                    served_per_s: r.served_per_s,
                    busy: r.busy,
                    capacity_per_s: r.capacity_per_s,
                }
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

    /// `/readyz`'s view of the registry, per model: the versions placed here
    /// (`declared`), and which of them are `loaded`, `loading`, `unloading` or `failed`
    /// (with the reason, `load_error`). `None` without `--registry`.
    pub fn versions(&self) -> Option<Value> {
        if !self.registry {
            return None;
        }
        let mut models: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
        for l in &self.lifecycle {
            let m = models.entry(&l.name).or_insert_with(|| {
                ["declared", "loaded", "loading", "unloading", "failed"]
                    .into_iter()
                    .map(|k| (k, Vec::new()))
                    .collect()
            });
            let at = json!({"version": l.version, "device": l.device});
            let (list, entry) = match &l.state {
                VersionState::Loading => ("loading", at.clone()),
                VersionState::Loaded => ("loaded", at.clone()),
                VersionState::Unloading => ("unloading", at.clone()),
                VersionState::Failed(why) => (
                    "failed",
                    json!({"version": l.version, "device": l.device, "load_error": why}),
                ),
            };
            if l.state != VersionState::Unloading {
                m.get_mut("declared").expect("listed above").push(at);
            }
            m.get_mut(list).expect("listed above").push(entry);
        }
        Some(json!(models))
    }

    /// The versions refused at load, for heartbeats.
    pub fn load_errors(&self) -> Vec<LoadFailure> {
        self.lifecycle
            .iter()
            .filter_map(|l| match &l.state {
                VersionState::Failed(why) => Some(LoadFailure {
                    name: l.name.clone(),
                    version: l.version.clone(),
                    device: l.device.clone(),
                    error: why.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The version a job for `model` at `version` (none: the model's default if served
    /// here, else any) runs on: its index in `models`.
    pub fn find(&self, model: &str, version: Option<&str>) -> Option<usize> {
        let matching = |v: Option<&str>| {
            self.models.iter().position(|m| {
                jetinfer_schemas::route_matches(model, v, &m.info.name, &m.info.version)
            })
        };
        if version.is_none() {
            if let Some(default) = self.defaults.get(model) {
                if let Some(i) = matching(Some(default)) {
                    return Some(i);
                }
            }
        }
        matching(version)
    }

    /// Whether this worker stopped serving what a job asks for (see `retired`).
    pub fn is_retired(&self, model: &str, version: Option<&str>) -> bool {
        self.retired
            .iter()
            .any(|(n, v)| n == model && version.map_or(true, |want| want == v))
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
        let (queue, _rx) = mpsc::channel(1);
        tx.send_modify(|r| {
            r.models.push(Served {
                info,
                device: "cpu".into(),
                batch_time,
                queue,
            });
            r.accepting = true;
        });
        assert!(rx.borrow().serving());
        assert_eq!(rx.borrow().announced()[0].batch_ms, Some(3.0));
        assert_eq!(rx.borrow().listed()[0]["device"], "cpu");
        tx.send_modify(|r| r.accepting = false);
        assert!(!rx.borrow().serving());
    }

    fn served(version: &str) -> Served {
        Served {
            info: ModelInfo {
                name: "m".into(),
                version: version.into(),
                max_batch_size: 4,
                inputs: vec![],
                batch_ms: None,
            },
            device: "cpu".into(),
            batch_time: Arc::default(),
            queue: mpsc::channel(1).0,
        }
    }

    #[test]
    fn unversioned_jobs_run_on_the_default_version_when_served_here() {
        let mut r = Roster {
            models: vec![served("1"), served("2")],
            ..Default::default()
        };
        assert_eq!(r.find("m", None), Some(0), "no default known: the first");
        r.defaults.insert("m".into(), "2".into());
        assert_eq!(r.find("m", None), Some(1));
        assert_eq!(r.find("m", Some("1")), Some(0));
        r.defaults.insert("m".into(), "3".into());
        assert_eq!(r.find("m", None), Some(0), "default not served here: any");
        assert_eq!(r.find("m", Some("3")), None);
        assert!(!r.is_retired("m", Some("3")));
        r.retired.push(("m".into(), "3".into()));
        assert!(r.is_retired("m", Some("3")) && r.is_retired("m", None));
        assert!(!r.is_retired("other", None));
    }

    #[test]
    fn readyz_lists_declared_loaded_loading_and_failed_versions() {
        let mut r = Roster::default();
        assert_eq!(r.versions(), None, "TOML mode: no registry view");
        r.registry = true;
        let at = |version: &str, state| Lifecycle {
            name: "m".into(),
            version: version.into(),
            device: "cpu".into(),
            state,
        };
        r.lifecycle = vec![
            at("1", VersionState::Loaded),
            at("2", VersionState::Loading),
            at("3", VersionState::Failed("sha256 mismatch".into())),
            at("0", VersionState::Unloading),
        ];
        let v = r.versions().unwrap();
        let versions = |k: &str| -> Vec<String> {
            v["m"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["version"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(versions("declared"), ["1", "2", "3"]);
        assert_eq!(versions("loaded"), ["1"]);
        assert_eq!(versions("loading"), ["2"]);
        assert_eq!(versions("unloading"), ["0"]);
        assert_eq!(v["m"]["failed"][0]["load_error"], "sha256 mismatch");
        let refused = r.load_errors();
        assert_eq!(refused.len(), 1);
        assert_eq!(
            (refused[0].version.as_str(), refused[0].error.as_str()),
            ("3", "sha256 mismatch")
        );
    }
}

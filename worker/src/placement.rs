//! Which registry versions this worker runs, and where (`--registry`): a pure function of
//! the declarations, the worker's id and its devices, so the lifecycle task only has to
//! compare what it runs with what this returns.
//!
//! A version is placed here when the registry wants it loaded (`loaded`, the default),
//! its `placement.workers` is empty or names this worker, and it has a device here: an
//! empty `placement.devices` means each of the worker's devices (`--devices`), otherwise
//! the listed devices this worker has. A version placed on several devices is one unit:
//! one batcher over an executor thread on each (see "Devices and instances" in
//! docs/models.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use jetinfer_schemas::registry::{ModelDecl, VersionDecl};

use crate::config::ModelConfig;

/// One version of one model: what loads, runs and unloads as a unit, on its devices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// A version as this worker should run it: its settings and the devices it runs on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Wanted {
    /// The settings; `device` is the first of `devices` (each device's thread gets a copy
    /// with its own).
    pub config: ModelConfig,
    pub devices: Vec<String>,
}

/// Every version this worker should run, with the settings and devices it runs it with.
pub(crate) fn placed<'a>(
    decls: impl IntoIterator<Item = &'a ModelDecl>,
    worker: &str,
    devices: &[String],
) -> BTreeMap<Key, Wanted> {
    let mut out = BTreeMap::new();
    for decl in decls {
        for v in &decl.versions {
            let for_us =
                v.placement.workers.is_empty() || v.placement.workers.iter().any(|w| w == worker);
            if !v.loaded || !for_us {
                continue;
            }
            let on: Vec<&String> = if v.placement.devices.is_empty() {
                devices.iter().collect()
            } else {
                v.placement
                    .devices
                    .iter()
                    .filter(|d| devices.contains(d))
                    .collect()
            };
            let Some(first) = on.first() else { continue };
            let key = Key {
                name: decl.name.clone(),
                version: v.version.clone(),
            };
            let wanted = Wanted {
                config: config(&decl.name, v, first),
                devices: on.iter().map(|d| d.to_string()).collect(),
            };
            out.insert(key, wanted);
        }
    }
    out
}

/// A declared version as the executor loads it (the models file's entry).
fn config(name: &str, v: &VersionDecl, device: &str) -> ModelConfig {
    ModelConfig {
        name: name.to_string(),
        version: v.version.clone(),
        path: PathBuf::from(&v.path),
        sha256: Some(v.sha256.clone()),
        device: device.to_string(),
        // The registry declares no instance count yet: one executor thread per device.
        instances: 1,
        dtype: v.dtype,
        max_batch_size: v.batching.max_batch_size,
        max_queue_delay_ms: v.batching.max_queue_delay_ms,
        linger_ms: v.batching.linger_ms,
        inputs: v.inputs.clone(),
        pad: v.batching.pad.clone(),
        shape_buckets: v.batching.shape_buckets,
        warm_lengths: v.batching.warm_lengths.clone(),
        // The registry declares TorchScript files only.
        sim: None,
    }
}

#[cfg(test)]
mod tests {
    use jetinfer_schemas::registry::{Audit, Placement};

    use super::*;

    fn version(v: &str, workers: &[&str], devices: &[&str], loaded: bool) -> VersionDecl {
        VersionDecl {
            path: "/m.pt".into(),
            sha256: "0".repeat(64),
            placement: Placement {
                workers: workers.iter().map(|s| s.to_string()).collect(),
                devices: devices.iter().map(|s| s.to_string()).collect(),
            },
            loaded,
            ..VersionDecl::example(v)
        }
    }

    #[test]
    fn places_by_worker_device_and_load_state() {
        let audit = Audit {
            by: "t".into(),
            at_ms: 0,
            change: "x".into(),
        };
        let mut decl =
            jetinfer_registry::edit::new_model("m", version("anywhere", &[], &[], true), audit)
                .unwrap();
        for v in [
            version("unloaded", &[], &[], false),
            version("other-worker", &["w2"], &[], true),
            version("this-worker", &["w1"], &["cuda:1", "cuda:0"], true),
            version("no-device-here", &[], &["cuda:7"], true),
        ] {
            jetinfer_registry::edit::add_version(&mut decl, v).unwrap();
        }
        let devices = vec!["cpu".to_string(), "cuda:0".to_string()];
        let placed = placed([&decl], "w1", &devices);
        let keys: Vec<String> = placed
            .iter()
            .map(|(k, w)| format!("{k} on {}", w.devices.join(",")))
            .collect();
        assert_eq!(
            keys,
            ["m anywhere on cpu,cuda:0", "m this-worker on cuda:0"]
        );
        let c = &placed.values().next().unwrap().config;
        assert_eq!(
            (c.max_batch_size, c.sha256.as_deref()),
            (8, Some("0".repeat(64).as_str()))
        );
    }
}

//! Worker configuration: process flags (each with an environment variable) and the models
//! TOML file.

use std::path::{Path, PathBuf};

use jetinfer_schemas::worker::InputSpec;
use jetinfer_schemas::DType;
use serde::Deserialize;

/// Configuration of one worker process.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "jetinfer-worker",
    about = "Runs TorchScript models for jetinfer jobs"
)]
pub struct Config {
    /// Where NATS and Redis are.
    #[command(flatten)]
    pub connect: jetinfer_connect::ConnectArgs,
    /// The models TOML file (required unless `--registry`).
    #[arg(long, env = "JETINFER_MODELS", required_unless_present = "registry")]
    pub models: Option<PathBuf>,
    /// Follow the model registry (NATS KV bucket `JETINFER_MODELS`) instead of a models
    /// file: load every declared version placed on this worker, and load, unload and
    /// reload versions as the registry changes, without a restart (see docs/models.md).
    /// `--models` is then ignored.
    #[arg(long, env = "JETINFER_REGISTRY")]
    pub registry: bool,
    /// With `--registry`: the devices this worker has. A version whose placement names no
    /// device loads on each of them; one that names devices loads on those listed here.
    #[arg(
        long,
        env = "JETINFER_DEVICES",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub devices: Vec<String>,
    /// Worker id, unique in the pool (default: random). Part of its run subject.
    #[arg(long, env = "JETINFER_WORKER_ID")]
    pub id: Option<String>,
    #[arg(long, env = "JETINFER_KEY_PREFIX", default_value = "jetinfer")]
    pub key_prefix: String,
    /// TTL of results in Redis, seconds.
    #[arg(long, env = "JETINFER_RESULT_TTL_S", default_value_t = 86_400)]
    pub result_ttl_s: u64,
    /// TTL of content-addressed cache entries, seconds.
    #[arg(long, env = "JETINFER_CACHE_TTL_S", default_value_t = 3_600)]
    pub cache_ttl_s: u64,
    /// Jobs accepted at once (waiting in batchers plus running). Default: per model, one
    /// batch running on each of its executor threads (devices × instances) and one
    /// forming — `max_batch_size × (threads + 1)`, the largest over the models (twice the
    /// largest max_batch_size with one thread each); with `--registry` (models come and
    /// go) 128.
    #[arg(long, env = "JETINFER_SLOTS")]
    pub slots: Option<u32>,
    /// Heartbeat period, ms.
    #[arg(long, env = "JETINFER_HEARTBEAT_MS", default_value_t = 1_000)]
    pub heartbeat_ms: u64,
    /// A forward running longer than this is hung: the worker exits (status 3) so its jobs
    /// go elsewhere, ms.
    #[arg(long, env = "JETINFER_FORWARD_TIMEOUT_MS", default_value_t = 60_000)]
    pub forward_timeout_ms: u64,
    /// Fault injection for the fault suite (see `faults.rs`), e.g. `oom_above=8`. Off by default.
    #[arg(long, env = "JETINFER_INJECT_FAULTS")]
    pub inject_faults: Option<String>,
    /// Count forward runs per job in Redis (`<prefix>:executions`), for the fault suite's
    /// duplicate-execution figure. Off by default.
    #[arg(long, env = "JETINFER_RECORD_EXECUTIONS")]
    pub record_executions: bool,
    /// How long a SIGTERM'd worker may take to finish the jobs it holds, ms.
    #[arg(long, env = "JETINFER_DRAIN_MS", default_value_t = 20_000)]
    pub drain_ms: u64,
    /// Job limits, the same flags as the dispatcher's: jobs are checked again here (inputs
    /// sent by reference are only seen here).
    #[command(flatten)]
    pub job_limits: jetinfer_connect::LimitsArgs,
    /// Logs, metrics and health endpoint, and `--check-config`.
    #[command(flatten)]
    pub ops: jetinfer_telemetry::OpsArgs,
}

/// The models file: `[[models]]` tables.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    pub models: Vec<ModelConfig>,
}

/// One `[[models]]` entry.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub version: String,
    /// TorchScript file; relative paths are relative to the models file. Not needed (and
    /// not read) with `sim`.
    #[serde(default)]
    pub path: PathBuf,
    /// Hex SHA-256 of the file, checked before loading.
    pub sha256: Option<String>,
    /// `cpu` or `cuda:N`. The same model (name and version) may be listed on several
    /// devices, or twice on one: it is then one model whose batches go to whichever of its
    /// executor threads is free (see docs/models.md, "Devices and instances").
    #[serde(default = "cpu")]
    pub device: String,
    /// Executor threads that run this model on this device, each one batch at a time and
    /// sharing one copy of the weights (default 1). On CUDA each then has its own stream
    /// (see `executor.rs`).
    #[serde(default = "one")]
    pub instances: u32,
    /// The module and floating inputs are cast to this.
    #[serde(default = "f32")]
    pub dtype: DType,
    pub max_batch_size: u32,
    /// While the device is busy, the longest a batch gathers jobs if one batch of the
    /// model takes less (see `gather.rs`); an idle device runs a batch at once.
    #[serde(default = "two_ms")]
    pub max_queue_delay_ms: u64,
    /// How long a batch waits for company on an *idle* device (default 0: it runs at
    /// once). Above 0 it trades that much latency at low load for fuller batches under
    /// load, and so less CPU per job (Triton's `max_queue_delay_microseconds` works this
    /// way; see `gather.rs` and docs/models.md).
    #[serde(default)]
    pub linger_ms: u64,
    /// Per-sample input specs; `-1` marks a dynamic dimension.
    pub inputs: Vec<InputSpec>,
    /// One pad value per input: batches are padded to their longest job, so jobs of
    /// different lengths batch together (see `pad.rs`). Absent: only equal shapes batch.
    #[serde(default)]
    pub pad: Option<Vec<i64>>,
    /// Round batch sizes (and padded lengths) up to a few buckets, each warmed at load, so
    /// libtorch sees few distinct shapes (see `pad.rs`).
    #[serde(default)]
    pub shape_buckets: bool,
    /// Lengths of dynamic dimensions warmed at load (with `shape_buckets`).
    #[serde(default)]
    pub warm_lengths: Vec<i64>,
    /// A simulated model instead of a TorchScript file: each batch takes `batch_ms +
    /// per_sample_ms × jobs` on the executor thread, no libtorch forward (see `sim.rs`).
    #[serde(default)]
    pub sim: Option<crate::sim::SimDevice>,
}

fn cpu() -> String {
    "cpu".into()
}
fn f32() -> DType {
    DType::F32
}
fn two_ms() -> u64 {
    2
}
fn one() -> u32 {
    1
}

/// The most instances of one model on one device: each is an OS thread, and more than a
/// few only contend for the same device.
pub const MAX_INSTANCES: u32 = 16;

/// Why the models file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelsFileError {
    #[error("cannot read models file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("models file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("model name {0:?} is not [A-Za-z0-9_-]")]
    Name(String),
    #[error("model {model} version {version:?} is invalid")]
    Version { model: String, version: String },
    #[error("model {0}: max_batch_size must be at least 1")]
    MaxBatchSize(String),
    #[error("model {0}: inputs must list at least one input")]
    NoInputs(String),
    #[error("model {0}: pad needs one value per input")]
    PadCount(String),
    #[error("model {0}: instances must be between 1 and {MAX_INSTANCES}")]
    Instances(String),
    #[error("model {0}: path is required (unless the model is simulated: `sim`)")]
    NoPath(String),
    #[error("model {0}: sim times must be finite, between 0 and 10000 ms")]
    SimTimes(String),
    #[error("model {model} version {version:?} is listed more than once with different settings: entries of one version may differ only in device and instances")]
    Conflict { model: String, version: String },
}

impl ModelsFile {
    /// Reads and checks the file; relative model paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<ModelsFile, ModelsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelsFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: ModelsFile =
            toml::from_str(&text).map_err(|source| ModelsFileError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for m in &mut file.models {
            m.check()?;
            if m.sim.is_none() && m.path.is_relative() {
                m.path = dir.join(&m.path);
            }
        }
        file.check_repeats()?;
        Ok(file)
    }

    /// Entries of one name and version are one model on several devices (or several
    /// instances on one): they must agree on everything but `device` and `instances`, since
    /// one batcher forms batches for all of them from one set of settings.
    fn check_repeats(&self) -> Result<(), ModelsFileError> {
        let settings = |m: &ModelConfig| ModelConfig {
            device: String::new(),
            instances: 0,
            ..m.clone()
        };
        for (i, a) in self.models.iter().enumerate() {
            let first = self.models[..i]
                .iter()
                .find(|b| b.name == a.name && b.version == a.version);
            if first.is_some_and(|b| settings(b) != settings(a)) {
                return Err(ModelsFileError::Conflict {
                    model: a.name.clone(),
                    version: a.version.clone(),
                });
            }
        }
        Ok(())
    }
}

impl ModelConfig {
    fn check(&self) -> Result<(), ModelsFileError> {
        let name = || self.name.clone();
        if !jetinfer_schemas::limits::is_valid_model_name(&self.name) {
            return Err(ModelsFileError::Name(name()));
        }
        if !jetinfer_schemas::limits::is_valid_version(&self.version) {
            return Err(ModelsFileError::Version {
                model: name(),
                version: self.version.clone(),
            });
        }
        if self.max_batch_size < 1 {
            return Err(ModelsFileError::MaxBatchSize(name()));
        }
        if self.inputs.is_empty() {
            return Err(ModelsFileError::NoInputs(name()));
        }
        if self
            .pad
            .as_ref()
            .is_some_and(|p| p.len() != self.inputs.len())
        {
            return Err(ModelsFileError::PadCount(name()));
        }
        if !(1..=MAX_INSTANCES).contains(&self.instances) {
            return Err(ModelsFileError::Instances(name()));
        }
        match &self.sim {
            None if self.path.as_os_str().is_empty() => Err(ModelsFileError::NoPath(name())),
            Some(sim) if !sim.is_valid() => Err(ModelsFileError::SimTimes(name())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let dir = tempfile_dir();
        let p = dir.join("m.toml");
        std::fs::write(
            &p,
            r#"
[[models]]
name = "resnet50"
version = "1"
path = "resnet50.pt"
device = "cuda:0"
dtype = "f16"
max_batch_size = 64
max_queue_delay_ms = 2
inputs = [{ dtype = "u8", shape = [3, 224, 224] }]
"#,
        )
        .unwrap();
        let f = ModelsFile::load(&p).unwrap();
        assert_eq!(f.models[0].dtype, DType::F16);
        assert_eq!(f.models[0].path, dir.join("resnet50.pt"));
        assert_eq!(f.models[0].inputs[0].shape, vec![3, 224, 224]);
        assert_eq!(f.models[0].linger_ms, 0, "no linger unless asked for");
        std::fs::write(&p, "[[models]]\nname = \"a.b\"\nversion = \"1\"\npath = \"x\"\nmax_batch_size = 1\ninputs = []\n").unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::Name(n)) if n == "a.b"
        ));
        assert!(matches!(
            ModelsFile::load(&dir.join("absent.toml")),
            Err(ModelsFileError::Read { .. })
        ));
    }

    #[test]
    fn instances_default_to_one_and_repeats_must_agree() {
        let dir = tempfile_dir();
        let p = dir.join("inst.toml");
        let entry = |device: &str, extra: &str| {
            format!("[[models]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ndevice = \"{device}\"\nmax_batch_size = 4\ninputs = [{{ dtype = \"f32\", shape = [2] }}]\n{extra}\n")
        };
        std::fs::write(&p, entry("cpu", "") + &entry("cpu", "instances = 3")).unwrap();
        let f = ModelsFile::load(&p).unwrap();
        assert_eq!(
            f.models.iter().map(|m| m.instances).collect::<Vec<_>>(),
            [1, 3]
        );
        std::fs::write(&p, entry("cpu", "instances = 0")).unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::Instances(_))
        ));
        std::fs::write(&p, entry("cpu", "instances = 17")).unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::Instances(_))
        ));
        std::fs::write(
            &p,
            entry("cpu", "") + &entry("cuda:0", "max_queue_delay_ms = 9"),
        )
        .unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::Conflict { .. })
        ));
    }

    #[test]
    fn sim_models_need_no_path_and_sane_times() {
        let dir = tempfile_dir();
        let p = dir.join("sim.toml");
        let entry = |extra: &str| {
            format!("[[models]]\nname = \"s\"\nversion = \"1\"\nmax_batch_size = 32\ninputs = [{{ dtype = \"f32\", shape = [4] }}]\n{extra}\n")
        };
        std::fs::write(&p, entry("sim = { batch_ms = 20.0, per_sample_ms = 0.5 }")).unwrap();
        let f = ModelsFile::load(&p).unwrap();
        let sim = f.models[0].sim.unwrap();
        assert_eq!((sim.batch_ms, sim.per_sample_ms), (20.0, 0.5));
        assert_eq!(
            f.models[0].path,
            PathBuf::new(),
            "no path resolved for a sim model"
        );
        std::fs::write(&p, entry("")).unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::NoPath(_))
        ));
        std::fs::write(&p, entry("sim = { batch_ms = -1.0 }")).unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::SimTimes(_))
        ));
        std::fs::write(&p, entry("sim = { batch_ms = 1.0, per_batch = 2.0 }")).unwrap();
        assert!(matches!(
            ModelsFile::load(&p),
            Err(ModelsFileError::Parse { .. })
        ));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("jetinfer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

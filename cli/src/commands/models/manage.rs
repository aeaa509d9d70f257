//! `jetinfer models list|show|history|declare|seed|default|weights|rollback|load|unload`: the model
//! registry (NATS KV bucket `JETINFER_MODELS`, see docs/models.md) as an operator reads and
//! changes it. Every write is compare-and-set on the model's revision (`--if-revision`
//! makes it the revision the operator looked at) and carries an audit record (`--by`,
//! default `$USER@$HOSTNAME`, and the time).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use jetinfer_registry::seed;
use jetinfer_registry::{edit, Audit, Registry, Stored, VersionDecl};
use jetinfer_schemas::registry::{parse_weights, Batching, Placement};
use jetinfer_schemas::worker::InputSpec;
use jetinfer_schemas::DType;
use serde_json::{json, Value};

use super::super::Global;

mod render;

use render::{history_text, list_text, outcome_text, revision_json, stored_json};

/// The registry subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RegistryCommand {
    /// Declared models: versions, default, weights, last change.
    List,
    /// One model's declaration in full, with its revision.
    Show { name: String },
    /// A model's audit trail: every revision the bucket keeps (64), oldest first.
    History { name: String },
    /// Declare a model, or a new version of a declared one (it gets no traffic until
    /// `default` or `weights` gives it some).
    Declare(DeclareArgs),
    /// Declare what a worker's models TOML file lists (idempotent: seeding again changes
    /// nothing).
    Seed {
        #[arg(long)]
        from: PathBuf,
    },
    /// Make a version the default and send it all unversioned traffic.
    Default {
        name: String,
        version: String,
        /// Write only if the model is still at this revision.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Set the share of unversioned traffic per version: `1=0.9,2=0.1` (0.01 precision,
    /// summing to 1). The dispatcher routes each job that names no version by the hash of
    /// its id, or of its sticky `meta` field, over 1,000 buckets.
    Weights {
        name: String,
        weights: String,
        /// Route by this `meta` field (e.g. `user`) when a job has it, so one user always
        /// sees one version; in the same write as the weights.
        #[arg(long, conflicts_with = "no_sticky_key")]
        sticky_key: Option<String>,
        /// Route by job id again (remove the sticky key).
        #[arg(long)]
        no_sticky_key: bool,
        /// Write only if the model is still at this revision.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Restore the model's previous declaration (as a new revision).
    Rollback { name: String },
    /// Ask the workers to load a declared version (the default for every version).
    Load {
        name: String,
        version: String,
        /// Write only if the model is still at this revision.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Ask the workers to unload a version: they stop announcing it, finish its queued and
    /// running batches, then free its memory. Refused while the version is the default or
    /// has traffic weight (move them first). It stays declared.
    Unload {
        name: String,
        version: String,
        /// Write only if the model is still at this revision.
        #[arg(long)]
        if_revision: Option<u64>,
    },
}

/// `models declare`.
#[derive(clap::Args, Debug)]
pub struct DeclareArgs {
    pub name: String,
    #[arg(long)]
    pub version: String,
    /// TorchScript file, on a path every worker can reach (stored absolute).
    #[arg(long)]
    pub path: PathBuf,
    /// Hex SHA-256 of the file (computed from the file when absent).
    #[arg(long)]
    pub sha256: Option<String>,
    /// One per input, in order: `dtype:dims`, e.g. `f32:16`, `u8:3,224,224`, `f32:-1,8`.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long)]
    pub max_batch_size: u32,
    #[arg(long, default_value_t = 2)]
    pub max_queue_delay_ms: u64,
    /// How long a batch waits for company on an idle device (0: it runs at once).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Devices to place the version on (`cpu`, `cuda:N`); none: anywhere.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Worker ids to place the version on; none: any.
    #[arg(long = "worker")]
    pub workers: Vec<String>,
}

/// Runs a registry subcommand.
pub async fn run(
    global: &Global,
    command: RegistryCommand,
    by: Option<String>,
    replicas: usize,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let nats = global.connect.nats().connect().await?;
    let js = jetstream::new(nats);
    let audit = |change: String| Audit {
        by: by.clone().unwrap_or_else(operator),
        at_ms: jetinfer_schemas::now_ms(),
        change,
    };
    let out = match command {
        RegistryCommand::List => {
            let stored = match Registry::open(&js).await? {
                Some(r) => r.list().await?,
                None => Vec::new(),
            };
            if !json_out {
                print!("{}", list_text(&stored));
                return Ok(ExitCode::SUCCESS);
            }
            json!({ "models": stored.iter().map(stored_json).collect::<Vec<_>>() })
        }
        RegistryCommand::Show { name } => {
            let stored = existing(&js)
                .await?
                .get(&name)
                .await?
                .with_context(|| format!("model {name} is not declared in the registry"))?;
            stored_json(&stored)
        }
        RegistryCommand::History { name } => {
            let history = existing(&js).await?.history(&name).await?;
            anyhow::ensure!(!history.is_empty(), "model {name} has no registry history");
            if !json_out {
                print!("{}", history_text(&history));
                return Ok(ExitCode::SUCCESS);
            }
            json!({ "name": name, "revisions": history.iter().map(revision_json).collect::<Vec<_>>() })
        }
        RegistryCommand::Declare(args) => {
            let registry = Registry::open_or_create(&js, replicas).await?;
            let version = version_decl(&args)?;
            let change = format!("declare version {}", args.version);
            let stored = match registry.get(&args.name).await? {
                None => {
                    let decl = edit::new_model(&args.name, version, audit(change))?;
                    let revision = registry.create(&decl).await?;
                    Stored { decl, revision }
                }
                Some(s) => {
                    registry
                        .modify(&args.name, Some(s.revision), audit(change), |d| {
                            edit::add_version(d, version)
                        })
                        .await?
                }
            };
            stored_json(&stored)
        }
        RegistryCommand::Seed { from } => {
            let decls = seed::declarations(&from, &audit(String::new()))?;
            let registry = Registry::open_or_create(&js, replicas).await?;
            let outcomes = seed::seed(&registry, decls).await?;
            if !json_out {
                for (name, outcome) in &outcomes {
                    println!("{name}: {}", outcome_text(outcome));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let models: Vec<Value> = outcomes
                .iter()
                .map(|(name, o)| {
                    let mut v = serde_json::to_value(o).expect("an outcome is plain data");
                    v["name"] = json!(name);
                    v
                })
                .collect();
            json!({ "models": models })
        }
        RegistryCommand::Default {
            name,
            version,
            if_revision,
        } => {
            let change = format!("default {version}");
            let stored = existing(&js)
                .await?
                .modify(&name, if_revision, audit(change), |d| {
                    edit::set_default(d, &version)
                })
                .await?;
            stored_json(&stored)
        }
        RegistryCommand::Weights {
            name,
            weights,
            sticky_key,
            no_sticky_key,
            if_revision,
        } => {
            let weights = parse_weights(&weights)?;
            let mut change = edit::weights_change(&weights);
            // None: leave the sticky key as it is; Some(None): remove it.
            let sticky = match (sticky_key, no_sticky_key) {
                (Some(key), _) => Some(Some(key)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            match &sticky {
                Some(Some(key)) => change.push_str(&format!(", sticky key {key}")),
                Some(None) => change.push_str(", no sticky key"),
                None => {}
            }
            let stored = existing(&js)
                .await?
                .modify(&name, if_revision, audit(change), |d| {
                    if let Some(key) = sticky {
                        d.sticky_key = key;
                    }
                    edit::set_weights(d, weights)
                })
                .await?;
            stored_json(&stored)
        }
        RegistryCommand::Load {
            name,
            version,
            if_revision,
        } => set_loaded(&js, &name, &version, if_revision, true, audit).await?,
        RegistryCommand::Unload {
            name,
            version,
            if_revision,
        } => set_loaded(&js, &name, &version, if_revision, false, audit).await?,
        RegistryCommand::Rollback { name } => {
            let (stored, restored) = existing(&js)
                .await?
                .rollback(&name, audit(String::new()))
                .await?;
            let mut v = stored_json(&stored);
            v["restored_revision"] = json!(restored);
            v
        }
    };
    if json_out {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `models load` / `models unload`: the version's desired load state, by compare-and-set.
async fn set_loaded(
    js: &jetstream::Context,
    name: &str,
    version: &str,
    if_revision: Option<u64>,
    loaded: bool,
    audit: impl Fn(String) -> Audit,
) -> anyhow::Result<Value> {
    let change = format!("{} {version}", if loaded { "load" } else { "unload" });
    let stored = existing(js)
        .await?
        .modify(name, if_revision, audit(change), |d| {
            edit::set_loaded(d, version, loaded)
        })
        .await?;
    Ok(stored_json(&stored))
}

/// The registry, which must exist for reading a model or changing one.
async fn existing(js: &jetstream::Context) -> anyhow::Result<Registry> {
    Ok(Registry::open(js)
        .await?
        .ok_or(jetinfer_registry::StoreError::NoBucket)?)
}

/// Who is changing the registry when `--by` is not given: `$USER@$HOSTNAME`.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

fn version_decl(args: &DeclareArgs) -> anyhow::Result<VersionDecl> {
    let path = std::path::absolute(&args.path)
        .with_context(|| format!("model path {}", args.path.display()))?;
    let sha256 = match &args.sha256 {
        Some(s) => s.to_ascii_lowercase(),
        None => seed::sha256_of(&path)?,
    };
    let dtype = DType::parse(&args.dtype)
        .with_context(|| format!("--dtype {:?} is not a dtype", args.dtype))?;
    let inputs = args
        .inputs
        .iter()
        .map(|s| parse_input(s))
        .collect::<anyhow::Result<_>>()?;
    Ok(VersionDecl {
        version: args.version.clone(),
        path: path.to_string_lossy().into_owned(),
        sha256,
        dtype,
        inputs,
        batching: Batching {
            max_batch_size: args.max_batch_size,
            max_queue_delay_ms: args.max_queue_delay_ms,
            linger_ms: args.linger_ms,
            pad: None,
            shape_buckets: false,
            warm_lengths: vec![],
        },
        placement: Placement {
            workers: args.workers.clone(),
            devices: args.devices.clone(),
        },
        loaded: true,
    })
}

/// `f32:3,224,224` → an input spec; `-1` is a dynamic dimension.
fn parse_input(text: &str) -> anyhow::Result<InputSpec> {
    let bad = || format!("--input {text:?}: expected dtype:dims, e.g. f32:16 or f32:-1,8");
    let (dtype, dims) = text.split_once(':').with_context(bad)?;
    let dtype = DType::parse(dtype).with_context(bad)?;
    let shape = dims
        .split(',')
        .map(|d| d.trim().parse::<i64>().ok().filter(|d| *d >= -1))
        .collect::<Option<Vec<i64>>>()
        .with_context(bad)?;
    Ok(InputSpec { dtype, shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_specs_parse_from_dtype_and_dims() {
        let s = parse_input("u8:3,224,224").unwrap();
        assert_eq!((s.dtype, s.shape), (DType::U8, vec![3, 224, 224]));
        assert_eq!(parse_input("f32:-1,8").unwrap().shape, vec![-1, 8]);
        for bad in ["f32", "f99:1", "f32:", "f32:a", "f32:-2"] {
            assert!(parse_input(bad).is_err(), "{bad}");
        }
    }
}

//! `jetinfer models` (or `jetinfer models served`): what is served and where — per model and version, the workers that
//! announced it (ids, devices, whether they accept work, free slots), its input specs and
//! batch limit — and how many jobs each model has queued per priority (messages in the
//! priority streams, waiting or held by a dispatcher). Read from the workers' heartbeats
//! and the streams' per-subject counts; a model with queued jobs and no worker is listed
//! too.
//!
//! The other subcommands read and change the model registry ([`manage`]).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;
use futures::TryStreamExt;
use jetinfer_connect::streams::partition_count;
use jetinfer_schemas::names::{parse_job_subject, priority_filter};
use jetinfer_schemas::partitions::partition_stream;
use jetinfer_schemas::worker::{Heartbeat, InputSpec};
use jetinfer_schemas::Priority;
use serde::Serialize;

mod manage;

use super::heartbeats;
use super::output::OutputArgs;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Without a subcommand: what is served (as `served`).
    #[command(subcommand)]
    pub command: Option<ModelsCommand>,
    /// How long to listen for worker heartbeats (workers send one per second).
    #[arg(
        long,
        env = "JETINFER_STATS_LISTEN_S",
        default_value_t = 2.5,
        global = true
    )]
    pub listen_s: f64,
    /// Who makes a registry change, for its audit record (default `$USER@$HOSTNAME`).
    #[arg(long, env = "JETINFER_OPERATOR", global = true)]
    pub by: Option<String>,
    /// Replicas of the registry's bucket when a command creates it (3 on a 3-node NATS
    /// cluster, like the dispatcher's `--replicas`); an existing bucket keeps its own.
    #[arg(long, env = "JETINFER_REPLICAS", default_value_t = 1, global = true)]
    pub replicas: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// What is served and where, from the workers' heartbeats (the default).
    Served,
    #[command(flatten)]
    Registry(manage::RegistryCommand),
}

/// One worker serving a model.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub worker: String,
    pub devices: Vec<String>,
    pub accepting: bool,
    pub free_slots: u32,
    pub slots: u32,
}

/// One model (name and version) and everything known of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelRow {
    pub name: String,
    /// "" for queued jobs of a model no worker announced.
    pub version: String,
    pub max_batch_size: u32,
    pub inputs: Vec<InputSpec>,
    /// Recent forward time of one batch, ms (the first worker's that reports one).
    pub batch_ms: Option<f64>,
    pub workers: Vec<Server>,
    /// Jobs in the streams per priority (`p0`, `p1`, `p2`), counted per model name.
    pub queued: BTreeMap<&'static str, u64>,
}

pub async fn run(global: &Global, args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None | Some(ModelsCommand::Served) => served(global, args.listen_s, args.output).await,
        Some(ModelsCommand::Registry(c)) => {
            manage::run(global, c, args.by, args.replicas, args.output.json).await
        }
    }
}

/// `models served`: per model and version, the workers announcing it and its queues.
async fn served(global: &Global, listen_s: f64, output: OutputArgs) -> anyhow::Result<ExitCode> {
    let nats = global.connect.nats().connect().await?;
    let beats = heartbeats::subscribe(&nats).await?;
    let queued = queued_per_model(&jetstream::new(nats.clone())).await?;
    let heard = heartbeats::collect(beats, Duration::from_secs_f64(listen_s)).await;
    let rows = rows(&heard, &queued);
    let refused = refused(&heard);
    if output.json {
        println!(
            "{}",
            serde_json::json!({ "workers_heard": heard.len(), "models": rows, "load_errors": refused })
        );
    } else {
        print!("{}", table(&rows, heard.len()));
        for r in &refused {
            let f = |k: &str| r[k].as_str().unwrap_or("").to_string();
            println!(
                "refused: {} {} on {} by {}: {}",
                f("name"),
                f("version"),
                f("device"),
                f("worker"),
                f("error")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The versions workers refused to load (`--registry`), with the worker and the reason.
fn refused(heard: &[Heartbeat]) -> Vec<serde_json::Value> {
    heard
        .iter()
        .flat_map(|hb| {
            hb.load_errors.iter().map(|e| {
                serde_json::json!({
                    "worker": hb.worker,
                    "name": e.name,
                    "version": e.version,
                    "device": e.device,
                    "error": e.error,
                })
            })
        })
        .collect()
}

/// Messages per model name and priority in the priority streams.
async fn queued_per_model(
    js: &jetstream::Context,
) -> anyhow::Result<BTreeMap<String, BTreeMap<&'static str, u64>>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for p in Priority::ALL {
        for k in 0..partition_count(js, p).await {
            let Ok(stream) = js.get_stream(partition_stream(p, k)).await else {
                continue; // not created yet: nothing queued
            };
            let mut subjects = stream.info_with_subjects(priority_filter(p)).await?;
            while let Some((subject, count)) = subjects.try_next().await? {
                if let Some((_, model)) = parse_job_subject(&subject) {
                    *out.entry(model.to_string())
                        .or_default()
                        .entry(p.as_str())
                        .or_default() += count as u64;
                }
            }
        }
    }
    Ok(out)
}

/// One row per (model, version) served, plus one per model with queued jobs and no
/// worker; sorted by name and version.
fn rows(
    heard: &[Heartbeat],
    queued: &BTreeMap<String, BTreeMap<&'static str, u64>>,
) -> Vec<ModelRow> {
    let mut by_route: BTreeMap<(String, String), ModelRow> = BTreeMap::new();
    for hb in heard {
        for m in &hb.models {
            let row = by_route
                .entry((m.name.clone(), m.version.clone()))
                .or_insert_with(|| ModelRow {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    max_batch_size: m.max_batch_size,
                    inputs: m.inputs.clone(),
                    ..ModelRow::default()
                });
            row.batch_ms = row.batch_ms.or(m.batch_ms);
            row.workers.push(Server {
                worker: hb.worker.clone(),
                devices: hb.devices.clone(),
                accepting: hb.accepting,
                free_slots: hb.free_slots,
                slots: hb.slots,
            });
        }
    }
    for row in by_route.values_mut() {
        row.queued = queued.get(&row.name).cloned().unwrap_or_default();
    }
    for (name, counts) in queued {
        if !by_route.keys().any(|(n, _)| n == name) {
            by_route.insert(
                (name.clone(), String::new()),
                ModelRow {
                    name: name.clone(),
                    queued: counts.clone(),
                    ..ModelRow::default()
                },
            );
        }
    }
    by_route.into_values().collect()
}

fn spec_text(inputs: &[InputSpec]) -> String {
    let specs: Vec<String> = inputs
        .iter()
        .map(|s| {
            let dims: Vec<String> = s
                .shape
                .iter()
                .map(|d| {
                    if *d < 0 {
                        "?".to_string()
                    } else {
                        d.to_string()
                    }
                })
                .collect();
            format!("{}[{}]", s.dtype.as_str(), dims.join(","))
        })
        .collect();
    specs.join(" ")
}

fn table(rows: &[ModelRow], heard: usize) -> String {
    let mut out = format!("{} model(s), {heard} worker(s) heard\n", rows.len());
    out.push_str(&format!(
        "{:<16} {:<8} {:<28} {:>6} {:>7} {:>7} {:>7}  {}\n",
        "model", "version", "inputs", "batch", "p0", "p1", "p2", "workers (devices, free/slots)"
    ));
    for r in rows {
        let workers: Vec<String> = r
            .workers
            .iter()
            .map(|w| {
                format!(
                    "{} ({}, {}/{}{})",
                    w.worker,
                    w.devices.join("+"),
                    w.free_slots,
                    w.slots,
                    if w.accepting { "" } else { ", draining" }
                )
            })
            .collect();
        let q = |p: &str| r.queued.get(p).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<16} {:<8} {:<28} {:>6} {:>7} {:>7} {:>7}  {}\n",
            r.name,
            if r.version.is_empty() {
                "-"
            } else {
                &r.version
            },
            spec_text(&r.inputs),
            r.max_batch_size,
            q("p0"),
            q("p1"),
            q("p2"),
            if workers.is_empty() {
                "none: jobs wait for a worker".to_string()
            } else {
                workers.join(", ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::worker::ModelInfo;
    use jetinfer_schemas::DType;

    fn beat(worker: &str, models: &[(&str, &str)]) -> Heartbeat {
        Heartbeat {
            v: 1,
            worker: worker.into(),
            models: models
                .iter()
                .map(|(n, v)| ModelInfo {
                    name: n.to_string(),
                    version: v.to_string(),
                    max_batch_size: 8,
                    inputs: vec![InputSpec {
                        dtype: DType::I64,
                        shape: vec![-1],
                    }],
                    batch_ms: None,
                })
                .collect(),
            slots: 16,
            free_slots: 12,
            devices: vec!["cpu".into()],
            gpu_memory_bytes: None,
            accepting: true,
            sent_at_ms: 0,
            load_errors: Vec::new(),
            load: None,
        }
    }

    #[test]
    fn rows_group_workers_per_model_and_list_unserved_queues() {
        let heard = [
            beat("w0", &[("mlp", "1"), ("seq", "2")]),
            beat("w1", &[("mlp", "1")]),
        ];
        let mut queued = BTreeMap::new();
        queued.insert("mlp".to_string(), BTreeMap::from([("p1", 5u64)]));
        queued.insert("ghost".to_string(), BTreeMap::from([("p2", 3u64)]));
        let rows = rows(&heard, &queued);
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(names, [("ghost", ""), ("mlp", "1"), ("seq", "2")]);
        assert_eq!(rows[1].workers.len(), 2);
        assert_eq!(rows[1].queued["p1"], 5);
        assert!(rows[0].workers.is_empty());
        let text = table(&rows, 2);
        assert!(text.contains("none: jobs wait for a worker"), "{text}");
        assert!(text.contains("i64[?]"), "{text}");
        assert!(text.contains("w0 (cpu, 12/16), w1 (cpu, 12/16)"), "{text}");
    }
}

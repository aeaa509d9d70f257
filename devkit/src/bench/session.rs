//! A whole benchmark: the ceiling, then each asked-for system on its own stack with the
//! same offered load, and the report with the ratios between them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ceiling::{ceiling, host_description, CeilingRun};
use super::events::{Event, Observer};
use super::options::BenchOptions;
use super::payload::{load_model, make_pool};
use super::report::BenchReport;
use super::system::{Bench, System};
use super::BenchError;
use crate::local::{repo_root, resolve_path};

/// Runs the benchmark `opts` describes and returns its report (ratios computed). The
/// caller prints it and decides the exit code.
pub async fn bench(
    opts: &BenchOptions,
    observer: &dyn Observer,
) -> Result<BenchReport, BenchError> {
    let models_path = resolve_path(&opts.models);
    let model = load_model(&models_path, &opts.model)?;
    let load = opts.load.resolve(model.max_batch_size);
    let pool = Arc::new(make_pool(&model, &opts.payload));
    let run_id = format!("{:08x}", rand::random::<u32>());
    let log_root = log_root(opts, &run_id)?;
    observer.event(Event::Started {
        run_id: &run_id,
        model: &model.name,
        models: &models_path,
        load: &load,
        duration_s: opts.duration_s,
        warmup_s: opts.warmup_s,
        storage: opts.storage.as_str(),
    });
    let mut report = BenchReport {
        label: opts.label.clone(),
        model: model.name.clone(),
        storage: opts.storage.as_str().into(),
        replicas: 1,
        host: host_description(),
        ..Default::default()
    };
    if let Some(c) = &opts.ceiling {
        let run = CeilingRun {
            models: &models_path,
            model: &model.name,
            batch: c.batch.unwrap_or(model.max_batch_size),
            seconds: c.seconds,
            dyn_len: opts.payload.dyn_len.1,
        };
        let value = ceiling(&run, &log_root, observer)?;
        observer.event(Event::Ceiling(&value));
        report.ceiling = Some(value);
    }
    let bench = Bench {
        opts,
        load: &load,
        pool,
        run_id: &run_id,
        log_root: &log_root,
        models: &models_path,
        observer,
    };
    for system in systems(opts) {
        report.runs.push(bench.measure(system).await?);
    }
    report.compute_ratios();
    Ok(report)
}

/// The systems to measure, in order: bare loop, bare relay, jetinfer, Python baseline.
fn systems(opts: &BenchOptions) -> Vec<System> {
    let mut systems = Vec::new();
    if opts.bare_loop {
        systems.push(System::Bare(super::bare::Hops::One));
    }
    if opts.bare_relay {
        systems.push(System::Bare(super::bare::Hops::Two));
    }
    if opts.pipeline {
        systems.push(if opts.running_stack.is_some() {
            System::External
        } else {
            System::Jetinfer
        });
    }
    if let Some(cmd) = &opts.python_worker {
        systems.push(System::Python(cmd.clone()));
    }
    systems
}

/// The folder of the stacks' logs, made if needed.
fn log_root(opts: &BenchOptions, run_id: &str) -> Result<PathBuf, BenchError> {
    let dir = match &opts.log_dir {
        Some(d) => d.clone(),
        None => repo_root()?.join("target/bench-logs").join(run_id),
    };
    create_dir(&dir)?;
    Ok(dir)
}

fn create_dir(dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

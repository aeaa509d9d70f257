//! `jetinfer demo`: the main job end to end. Starts a local stack (nats-server,
//! redis-server, a dispatcher, N workers) unless told to use running servers
//! (`--use-running`, or `--nats-url`/`--redis-url` on the command line: an inherited
//! `NATS_URL`/`REDIS_URL` alone does not redirect it, see [`super::servers`]), publishes
//! golden jobs across P0/P1/P2, polls every result from Redis, checks each against the
//! golden outputs, and prints which servers it used and a per-priority table (`--json`: one
//! JSON report on stdout, the steps on stderr). Exit code 0 only if every result is
//! present and right.
//!
//! The demo itself is [`jetinfer_devkit::demo::run`]; this module turns the flags into its
//! options and prints what it reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_connect::{DEFAULT_NATS_URL, DEFAULT_REDIS_URL};
use jetinfer_devkit::demo::{self, report, DemoOptions, Event, Observer, Tolerance};
use serde_json::{json, Value};

use super::output::OutputArgs;
use super::{servers, Global};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How many jobs to publish.
    #[arg(long, env = "JETINFER_DEMO_JOBS", default_value_t = 1200)]
    pub jobs: usize,
    /// Workers to start (local stack only).
    #[arg(long, env = "JETINFER_DEMO_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// The workers' model file (local stack only); relative paths also tried from the repo root.
    #[arg(
        long,
        env = "JETINFER_MODELS",
        default_value = "models/out/models.toml"
    )]
    pub models: PathBuf,
    /// The folder with golden.json (written by models/export.py).
    #[arg(long, env = "JETINFER_GOLDEN", default_value = "models/out")]
    pub golden: PathBuf,
    /// Absolute tolerance of the golden comparison (raise it for f16 models on a GPU).
    #[arg(long, env = "JETINFER_DEMO_ATOL", default_value_t = 1e-4)]
    pub atol: f32,
    /// Relative tolerance of the golden comparison.
    #[arg(long, env = "JETINFER_DEMO_RTOL", default_value_t = 1e-3)]
    pub rtol: f32,
    /// Share of P0,P1,P2 jobs (weights).
    #[arg(long, env = "JETINFER_DEMO_MIX", value_delimiter = ',', default_values_t = [20u32, 30, 50])]
    pub mix: Vec<u32>,
    /// Publish acknowledgements awaited at once.
    #[arg(long, env = "JETINFER_DEMO_IN_FLIGHT", default_value_t = 256)]
    pub in_flight: usize,
    /// How long to wait for all results, seconds [default: 60 + 0.02 per job].
    #[arg(long, env = "JETINFER_DEMO_TIMEOUT_S")]
    pub timeout_s: Option<f64>,
    /// Let the result cache answer repeated inputs (off by default so every job runs).
    #[arg(long, env = "JETINFER_DEMO_CACHE")]
    pub cache: bool,
    /// Extra dispatcher arguments (local stack; split on spaces, repeatable).
    #[arg(
        long = "dispatcher-arg",
        env = "JETINFER_DEMO_DISPATCHER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub dispatcher_args: Vec<String>,
    /// Extra worker arguments (local stack; split on spaces, repeatable).
    #[arg(
        long = "worker-arg",
        env = "JETINFER_DEMO_WORKER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub worker_args: Vec<String>,
    /// Where the local stack's logs go (default: target/demo-logs/RUN_ID in the repository).
    #[arg(long, env = "JETINFER_DEMO_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// How long the local stack may take to start (workers load and warm models), seconds.
    #[arg(long, env = "JETINFER_DEMO_STARTUP_TIMEOUT_S", default_value_t = 180.0)]
    pub startup_timeout_s: f64,
    /// Use the running servers of --nats-url/--redis-url (or NATS_URL/REDIS_URL, or the
    /// defaults) instead of starting a stack. Without it, only URLs given as flags are used.
    #[arg(long)]
    pub use_running: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(global: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let json = args.output.json;
    let opts = options(global, args)?;
    // Ctrl-C during the run stops the stack gracefully (workers drain, temp folders
    // are removed).
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let printer = Printer {
        json,
        report: Mutex::new(json!({})),
    };
    let all_right = demo::run(&opts, &printer, interrupt).await?;
    if json {
        let mut report = printer
            .report
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        report["all_right"] = Value::from(all_right);
        println!("{report}");
    }
    Ok(if all_right {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks the flags and turns them into the demo's options.
fn options(global: &Global, args: DemoArgs) -> anyhow::Result<DemoOptions> {
    let mix: [u32; 3] = args
        .mix
        .as_slice()
        .try_into()
        .context("--mix takes three weights: P0,P1,P2")?;
    let servers = servers::choose(
        global.connect.nats_url.as_deref(),
        global.connect.redis_url.as_deref(),
        global.explicit,
        args.use_running,
        (DEFAULT_NATS_URL, DEFAULT_REDIS_URL),
    );
    for note in &servers.notes {
        eprintln!("note: {note}");
    }
    Ok(DemoOptions {
        jobs: args.jobs,
        workers: args.workers,
        models: args.models,
        golden: args.golden,
        tolerance: Tolerance {
            atol: args.atol,
            rtol: args.rtol,
        },
        mix,
        in_flight: args.in_flight,
        timeout: args.timeout_s.map(Duration::from_secs_f64),
        cache: args.cache,
        dispatcher_args: args.dispatcher_args,
        worker_args: args.worker_args,
        log_dir: args.log_dir,
        startup_timeout: Duration::from_secs_f64(args.startup_timeout_s),
        key_prefix: global.key_prefix.clone(),
        nats_url: servers.nats_url,
        redis_url: servers.redis_url,
    })
}

/// Prints the demo's steps (on stderr with `--json`) and draws its progress bars; with
/// `--json` it also gathers the report printed at the end.
struct Printer {
    json: bool,
    report: Mutex<Value>,
}

/// Prints a line on stdout, or on stderr when stdout carries the JSON report.
macro_rules! say {
    ($self:ident, $($arg:tt)*) => {
        if $self.json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

impl Printer {
    fn record(&self, key: &str, value: Value) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report[key] = value;
    }
}

/// A table row as JSON: counts, error codes, latency percentiles, throughput, batch size.
fn row_value(r: &report::Row) -> Value {
    let pct = |v: &[f64], p: f64| report::percentile(v, p);
    json!({
        "priority": r.label, "jobs": r.jobs, "correct": r.correct, "wrong": r.wrong,
        "missing": r.missing, "not_published": r.not_published, "errors": r.errors,
        "cached": r.cached, "e2e_p50_ms": pct(&r.e2e_ms, 50.0), "e2e_p99_ms": pct(&r.e2e_ms, 99.0),
        "jobs_per_s": r.jobs_per_s(), "mean_batch": r.mean_batch(),
    })
}

impl Observer for Printer {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started {
                run,
                jobs,
                models,
                mix,
            } => {
                self.record("run", json!(run));
                say!(
                    self,
                    "demo run {run}: {jobs} jobs over {} (P0/P1/P2 weights {mix:?})",
                    models.join(", ")
                )
            }
            Event::UsingRunningStack {
                nats_url,
                redis_url,
            } => {
                self.record(
                    "servers",
                    json!({"nats": nats_url, "redis": redis_url, "started": false}),
                );
                say!(
                    self,
                    "using the running stack at {nats_url} and {redis_url}"
                )
            }
            Event::StackStarting { workers, log_dir } => say!(
                self,
                "starting the local stack: {workers} worker(s), logs in {}",
                log_dir.display()
            ),
            Event::StackReady {
                secs,
                nats_url,
                redis_url,
            } => {
                self.record(
                    "servers",
                    json!({"nats": nats_url, "redis": redis_url, "started": true}),
                );
                say!(
                    self,
                    "stack ready in {secs:.1} s (nats {nats_url}, redis {redis_url})"
                )
            }
            Event::Published {
                planned,
                refused,
                secs,
                first_refusal,
            } => {
                say!(
                    self,
                    "published {} jobs in {secs:.2} s ({:.0}/s), {refused} refused",
                    planned - refused,
                    planned as f64 / secs.max(1e-9)
                );
                if let Some(e) = first_refusal {
                    say!(self, "  first refusal: {e}");
                }
            }
            Event::Collected {
                present,
                expected,
                secs,
            } => say!(
                self,
                "collected {present} of {expected} results in {secs:.2} s"
            ),
            Event::Report { rows, failures } => {
                if self.json {
                    self.record("rows", rows.iter().map(row_value).collect());
                    self.record("failures", json!(failures));
                    return;
                }
                println!();
                print!("{}", report::render(rows));
                for line in failures {
                    println!("{line}");
                }
            }
            Event::StackTrouble(e) => eprintln!("{e}"),
            Event::StackLogs(dir) => eprintln!("logs of the local stack: {}", dir.display()),
        }
    }

    fn progress(&self, what: &str, len: u64) -> ProgressBar {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
                .expect("a valid progress template: this is a bug")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }
}

//! `jetinfer demo`: the main job end to end. Starts a local stack (nats-server,
//! redis-server, a dispatcher, N workers) unless servers are given, publishes golden jobs
//! across P0/P1/P2, polls every result from Redis, checks each against the golden outputs,
//! and prints a per-priority table. Exit code 0 only if every result is present and right.
//!
//! The demo itself is [`jetinfer_devkit::demo::run`]; this module turns the flags into its
//! options and prints what it reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_devkit::demo::{self, report, DemoOptions, Event, Observer, Tolerance};

use super::Global;

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
}

pub async fn run(global: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let opts = options(global, args)?;
    // Ctrl-C during the run stops the stack gracefully (workers drain, temp folders
    // are removed).
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let all_right = demo::run(&opts, &Printer, interrupt).await?;
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
        nats_url: global.connect.nats_url.clone(),
        redis_url: global.connect.redis_url.clone(),
    })
}

/// Prints the demo's steps and draws its progress bars.
struct Printer;

impl Observer for Printer {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started {
                run,
                jobs,
                models,
                mix,
            } => println!(
                "demo run {run}: {jobs} jobs over {} (P0/P1/P2 weights {mix:?})",
                models.join(", ")
            ),
            Event::UsingRunningStack {
                nats_url,
                redis_url,
            } => println!("using the running stack at {nats_url} and {redis_url}"),
            Event::StackStarting { workers, log_dir } => println!(
                "starting the local stack: {workers} worker(s), logs in {}",
                log_dir.display()
            ),
            Event::StackReady {
                secs,
                nats_url,
                redis_url,
            } => println!("stack ready in {secs:.1} s (nats {nats_url}, redis {redis_url})"),
            Event::Published {
                planned,
                refused,
                secs,
                first_refusal,
            } => {
                println!(
                    "published {} jobs in {secs:.2} s ({:.0}/s), {refused} refused",
                    planned - refused,
                    planned as f64 / secs.max(1e-9)
                );
                if let Some(e) = first_refusal {
                    println!("  first refusal: {e}");
                }
            }
            Event::Collected {
                present,
                expected,
                secs,
            } => println!("collected {present} of {expected} results in {secs:.2} s"),
            Event::Report { rows, failures } => {
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

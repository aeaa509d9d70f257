//! `jetinfer bench`: load the pipeline with jobs for one model and measure it — and, in
//! the same run, what it is compared with: the raw model in a loop (`--ceiling`, run by
//! `jetinfer-worker ceiling`, since only the worker links libtorch), the bare JetStream →
//! Redis loop (`--bare-loop`), and a Python worker (`--python-worker CMD`).
//!
//! The measuring is [`jetinfer_devkit::bench::bench`]; this module turns the flags into its
//! options and prints what it reports: which servers each system used, a table per
//! system, the ratios, a JSON report (`--json FILE`, or `--json` alone: on stdout, with
//! everything else on stderr) and an SVG plot (`--svg`).
//!
//! Each system gets stacks of its own unless `--use-running` (or both `--nats-url` and
//! `--redis-url` as flags) says to measure the running stack; an inherited
//! `NATS_URL`/`REDIS_URL` alone does not redirect it (see [`super::servers`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_devkit::bench::load::LoadChoice;
use jetinfer_devkit::bench::payload::PayloadOptions;
use jetinfer_devkit::bench::run::Arrival;
use jetinfer_devkit::bench::{
    self, svg, BenchOptions, CeilingOptions, Event, Observer, RunningStack, Storage,
};

use jetinfer_connect::{DEFAULT_NATS_URL, DEFAULT_REDIS_URL};

use super::{servers, Global};

/// The `--json` value that means standard output.
const STDOUT: &str = "-";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The model to load (a name in the models file).
    #[arg(long, env = "JETINFER_BENCH_MODEL")]
    pub model: String,
    /// The models TOML (the workers' file; payloads follow its input spec). Relative paths
    /// are also tried from the repository root.
    #[arg(
        long,
        env = "JETINFER_MODELS",
        default_value = "models/out/models.toml"
    )]
    pub models: PathBuf,
    /// Open loop: total offered jobs per second, split over priorities by --mix.
    #[arg(long, conflicts_with_all = ["concurrency", "rates"])]
    pub rate: Option<f64>,
    /// Open loop: jobs per second for P0,P1,P2 (e.g. `50,0,4000`).
    #[arg(long, value_delimiter = ',', conflicts_with = "concurrency")]
    pub rates: Option<Vec<f64>>,
    /// Closed loop: jobs kept in flight (the default load: 4 × max_batch_size).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open-loop arrivals.
    #[arg(long, value_enum, default_value_t = Arrival::Poisson)]
    pub arrival: Arrival,
    /// Priority weights P0,P1,P2 (for --rate and closed loop).
    #[arg(long, value_delimiter = ',', default_values_t = [0u32, 1, 0])]
    pub mix: Vec<u32>,
    /// Seconds of load, warm-up included.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds at the start that are not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Seconds to wait for stragglers after the load.
    #[arg(long, default_value_t = 15.0)]
    pub drain_s: f64,
    /// Dynamic dimensions (sequence lengths): uniform in MIN..=MAX.
    #[arg(long, value_delimiter = ',', default_values_t = [16i64, 128])]
    pub dyn_len: Vec<i64>,
    /// Integer inputs get values in 1..INT_MAX (token ids).
    #[arg(long, default_value_t = 1000)]
    pub int_max: i64,
    /// Distinct random samples cycled.
    #[arg(long, default_value_t = 64)]
    pub pool: usize,
    /// Publish acknowledgements awaited at once (open loop).
    #[arg(long, default_value_t = 4096)]
    pub max_publishing: usize,
    /// jetinfer's jobs whose input data reaches this many bytes keep their inputs in Redis
    /// and carry a reference [default: the client's, 32 KiB]; a huge value sends everything
    /// inline. The bare loop and the Python baseline always get inline jobs.
    #[arg(long)]
    pub inline_limit: Option<usize>,
    /// Extra redis-servers started for jetinfer's inputs sent by reference (input stores
    /// 1..=N, `--inputs-redis-url` of the producers and workers); 0 keeps them in the result
    /// store.
    #[arg(long, default_value_t = 0)]
    pub input_stores: usize,
    /// JetStream storage of the streams (the dispatcher's `--storage`, the bare loop's and
    /// the Python worker's stream).
    #[arg(long, value_enum, default_value_t = Storage::File)]
    pub storage: Storage,
    /// Partition streams per priority: the dispatcher's `--partitions`, and as many
    /// streams for `--bare-loop`, spread by job id the same way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub partitions: u16,
    /// Workers to start (local stack).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Extra dispatcher arguments (split on spaces, repeatable).
    #[arg(
        long = "dispatcher-arg",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub dispatcher_args: Vec<String>,
    /// Extra worker arguments (split on spaces, repeatable).
    #[arg(long = "worker-arg", value_delimiter = ' ', allow_hyphen_values = true)]
    pub worker_args: Vec<String>,
    /// Also run the model alone in a tight loop (`jetinfer-worker ceiling`) and report
    /// pipeline / ceiling.
    #[arg(long)]
    pub ceiling: bool,
    /// Batch size of the ceiling loop [default: the model's max_batch_size].
    #[arg(long)]
    pub ceiling_batch: Option<u32>,
    /// Seconds of the ceiling loop.
    #[arg(long, default_value_t = 5.0)]
    pub ceiling_seconds: f64,
    /// Also run the bare JetStream publish → pull → ack → Redis SET loop with the same load.
    #[arg(long)]
    pub bare_loop: bool,
    /// Also run the bare relay: the bare loop with a second hop (each pulled group as one
    /// core-NATS request to a second consumer, which stores, announces and replies; then
    /// the ack): the least a dispatcher-and-worker design does per job.
    #[arg(long)]
    pub bare_relay: bool,
    /// Skip the jetinfer pipeline (with --bare-loop, --bare-relay or --python-worker).
    #[arg(long)]
    pub no_pipeline: bool,
    /// Also run this command as a baseline worker (e.g. `python3 bench/python/worker.py`)
    /// on a fresh stack without dispatcher; it gets NATS_URL, REDIS_URL, JETINFER_MODELS
    /// and must consume the JETINFER_JOBS stream (created here) and write results and
    /// notices as jetinfer does.
    #[arg(long)]
    pub python_worker: Option<String>,
    /// Name for the report and plot title.
    #[arg(long, default_value = "jetinfer bench")]
    pub label: String,
    /// Write the JSON report to FILE; `--json` alone prints it on stdout (and the tables
    /// and steps on stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = STDOUT)]
    pub json: Option<PathBuf>,
    /// Measure the running stack of --nats-url/--redis-url (or NATS_URL/REDIS_URL, or the
    /// defaults) instead of starting stacks. Without it, only URLs given as flags are used.
    #[arg(long)]
    pub use_running: bool,
    /// Write the SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Where the local stacks' logs go [default: target/bench-logs/RUN].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// How long a stack may take to start, seconds.
    #[arg(long, default_value_t = 180.0)]
    pub startup_timeout_s: f64,
}

pub async fn run(global: &Global, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let opts = options(global, args)?;
    let to_stdout = opts
        .json
        .as_deref()
        .is_some_and(|p| p.as_os_str() == STDOUT);
    let printer = Printer { quiet: to_stdout };
    let report = bench::bench(&opts.bench, &printer).await?;
    if !to_stdout {
        // The tables print on stdout; with the report there they are left out.
        for r in &report.runs {
            r.print();
        }
        for (k, v) in &report.ratios {
            println!("{k}: {v:.3}");
        }
    }
    match &opts.json {
        Some(_) if to_stdout => println!("{}", serde_json::to_string(&report)?),
        Some(path) => {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("report: {}", path.display());
        }
        None => {}
    }
    if let Some(path) = &opts.svg {
        std::fs::write(path, svg::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("plot: {}", path.display());
    }
    let failed = report.runs.iter().any(|r| r.missing > 0 || r.ok == 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The benchmark's options and where its outputs go.
struct Options {
    bench: BenchOptions,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
}

/// Checks the flags and turns them into the benchmark's options.
fn options(global: &Global, args: BenchArgs) -> anyhow::Result<Options> {
    let mix: [u32; 3] = args
        .mix
        .as_slice()
        .try_into()
        .context("--mix takes three weights: P0,P1,P2")?;
    if args.dyn_len.len() != 2 || args.rates.as_ref().is_some_and(|r| r.len() != 3) {
        bail!("--dyn-len takes MIN,MAX and --rates takes P0,P1,P2");
    }
    if args.duration_s <= args.warmup_s {
        bail!("--duration-s must be longer than --warmup-s");
    }
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
    // The running stack is measured as a whole: both servers, or neither.
    let running_stack = match (servers.nats_url, servers.redis_url) {
        (Some(nats_url), Some(redis_url)) => Some(RunningStack {
            nats_url,
            redis_url,
        }),
        (None, None) => None,
        _ => bail!(
            "bench measures a running stack only with both --nats-url and --redis-url \
             (or --use-running); give both, or neither to start its own"
        ),
    };
    let bench = BenchOptions {
        model: args.model,
        models: args.models,
        load: LoadChoice {
            rate: args.rate,
            rates: args.rates.map(|r| [r[0], r[1], r[2]]),
            concurrency: args.concurrency,
            arrival: args.arrival,
            mix,
        },
        duration_s: args.duration_s,
        warmup_s: args.warmup_s,
        drain_s: args.drain_s,
        payload: PayloadOptions {
            dyn_len: (args.dyn_len[0], args.dyn_len[1]),
            int_max: args.int_max,
            pool: args.pool,
        },
        max_publishing: args.max_publishing,
        inline_limit: args.inline_limit,
        input_stores: args.input_stores,
        storage: args.storage,
        partitions: args.partitions,
        workers: args.workers,
        dispatcher_args: args.dispatcher_args,
        worker_args: args.worker_args,
        ceiling: args.ceiling.then_some(CeilingOptions {
            batch: args.ceiling_batch,
            seconds: args.ceiling_seconds,
        }),
        bare_loop: args.bare_loop,
        bare_relay: args.bare_relay,
        pipeline: !args.no_pipeline,
        python_worker: args.python_worker,
        label: args.label,
        log_dir: args.log_dir,
        startup_timeout: Duration::from_secs_f64(args.startup_timeout_s),
        key_prefix: global.key_prefix.clone(),
        running_stack,
    };
    Ok(Options {
        bench,
        json: args.json,
        svg: args.svg,
    })
}

/// Prints the benchmark's steps (on stderr when `quiet`: stdout carries the JSON report)
/// and draws its progress bars.
struct Printer {
    quiet: bool,
}

/// Prints a line on stdout, or on stderr when the printer is quiet.
macro_rules! say {
    ($self:ident, $($arg:tt)*) => {
        if $self.quiet { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

impl Observer for Printer {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started {
                run_id,
                model,
                models,
                load,
                duration_s,
                warmup_s,
                storage,
            } => say!(self, "bench {run_id}: model {model} ({models:?}), load {load:?}, {duration_s} s ({warmup_s} s warm-up), storage {storage}"),
            Event::CeilingCommand {
                worker,
                model,
                batch,
                seconds,
            } => say!(
                self,
                "ceiling: {} ceiling --model {model} --batch {batch} --seconds {seconds}",
                worker.display()
            ),
            Event::Ceiling(c) => say!(self, "ceiling: {c}"),
            Event::StackStarting { system, log_dir } => say!(
                self,
                "{system}: starting its stack (logs in {})",
                log_dir.display()
            ),
            Event::StackReady {
                system,
                nats_url,
                redis_url,
                running,
            } => say!(
                self,
                "{system}: {} nats {nats_url}, redis {redis_url}",
                if running { "using the running stack:" } else { "its stack is up:" }
            ),
            Event::Measured { system, secs } => say!(self, "{system}: measured in {secs:.1} s"),
            Event::Missing {
                system,
                missing,
                log_dir,
            } => eprintln!(
                "{system}: {missing} jobs missing; logs in {}",
                log_dir.display()
            ),
        }
    }

    fn progress(&self, system: &str, ticks: u64) -> ProgressBar {
        let bar = ProgressBar::new(ticks);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg} {elapsed}")
                .expect("a valid progress template: this is a bug")
                .progress_chars("=> "),
        );
        bar.set_prefix(system.to_string());
        bar
    }
}

//! `jetinfer bench`: load the pipeline with jobs for one model and measure it — and, in
//! the same run, what it is compared with: the raw model in a loop (`--ceiling`, run by
//! `jetinfer-worker ceiling`, since only the worker links libtorch), the bare JetStream →
//! Redis loop (`--bare-loop`), and a Python worker (`--python-worker CMD`).
//!
//! Each system gets its own fresh local nats-server and redis-server (or the running
//! stack when both URLs are given, jetinfer only), the same offered load, and the same
//! measurement ([`jetinfer_devkit::bench::run`]). Output: a table per system, the ratios,
//! a JSON report (`--json`) and an SVG plot (`--svg`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, stream};
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_devkit::bench::payload::{load_model, make_pool, PayloadOptions};
use jetinfer_devkit::bench::report::{BenchReport, CpuReport, RunReport};
use jetinfer_devkit::bench::run::{self, Arrival, Load, RunSpec};
use jetinfer_devkit::bench::{bare, cpu_seconds, svg};
use jetinfer_devkit::local::{binary, repo_root, resolve_path, LocalStack, Process};
use jetinfer_schemas::names::{JOBS_PREFIX, JOBS_STREAM};

use super::Global;

/// Stream storage of JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageArg {
    File,
    Memory,
}

impl StorageArg {
    fn as_str(self) -> &'static str {
        match self {
            StorageArg::File => "file",
            StorageArg::Memory => "memory",
        }
    }
    fn js(self) -> stream::StorageType {
        match self {
            StorageArg::File => stream::StorageType::File,
            StorageArg::Memory => stream::StorageType::Memory,
        }
    }
}

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
    /// JetStream storage of the streams (the dispatcher's `--storage`, the bare loop's and
    /// the Python worker's stream).
    #[arg(long, value_enum, default_value_t = StorageArg::File)]
    pub storage: StorageArg,
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
    /// Skip the jetinfer pipeline (with --bare-loop or --python-worker).
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
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
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
    let models_path = resolve_path(&args.models);
    let model = load_model(&models_path, &args.model)?;
    let mix: [u32; 3] = args
        .mix
        .as_slice()
        .try_into()
        .context("--mix takes three weights: P0,P1,P2")?;
    if args.dyn_len.len() != 2 || args.rates.as_ref().is_some_and(|r| r.len() != 3) {
        bail!("--dyn-len takes MIN,MAX and --rates takes P0,P1,P2");
    }
    let load = match (&args.rate, &args.rates, args.concurrency) {
        (Some(rate), _, _) => {
            let total: f64 = mix.iter().map(|&w| w as f64).sum::<f64>().max(1.0);
            Load::Open {
                rates: mix.map(|w| rate * w as f64 / total),
                arrival: args.arrival,
            }
        }
        (_, Some(r), _) => Load::Open {
            rates: [r[0], r[1], r[2]],
            arrival: args.arrival,
        },
        (_, _, c) => Load::Closed {
            concurrency: c.unwrap_or(4 * model.max_batch_size as usize),
            mix,
        },
    };
    if args.duration_s <= args.warmup_s {
        bail!("--duration-s must be longer than --warmup-s");
    }
    let opts = PayloadOptions {
        dyn_len: (args.dyn_len[0], args.dyn_len[1]),
        int_max: args.int_max,
        pool: args.pool,
    };
    let pool = Arc::new(make_pool(&model, &opts));
    let run_id = format!("{:08x}", rand::random::<u32>());
    let log_root = match &args.log_dir {
        Some(d) => d.clone(),
        None => repo_root()?.join("target/bench-logs").join(&run_id),
    };
    std::fs::create_dir_all(&log_root)
        .with_context(|| format!("creating {}", log_root.display()))?;
    println!("bench {run_id}: model {} ({models_path:?}), load {load:?}, {} s ({} s warm-up), storage {}", model.name, args.duration_s, args.warmup_s, args.storage.as_str());

    let mut report = BenchReport {
        label: args.label.clone(),
        model: model.name.clone(),
        storage: args.storage.as_str().into(),
        replicas: 1,
        host: host_description(),
        ..Default::default()
    };
    if args.ceiling {
        let batch = args.ceiling_batch.unwrap_or(model.max_batch_size);
        let c = ceiling(
            &models_path,
            &model.name,
            batch,
            args.ceiling_seconds,
            args.dyn_len[1],
            &log_root,
        )?;
        println!("ceiling: {c}");
        report.ceiling = Some(c);
    }
    let external = global.connect.nats_url.is_some() && global.connect.redis_url.is_some();
    let base = Base {
        global,
        args: &args,
        load: &load,
        pool: pool.clone(),
        run_id: &run_id,
        log_root: &log_root,
        models: &models_path,
    };
    if args.bare_loop {
        report.runs.push(base.measure(System::Bare).await?);
    }
    if !args.no_pipeline {
        report.runs.push(
            base.measure(if external {
                System::External
            } else {
                System::Jetinfer
            })
            .await?,
        );
    }
    if let Some(cmd) = &args.python_worker {
        report
            .runs
            .push(base.measure(System::Python(cmd.clone())).await?);
    }
    report.compute_ratios();
    for r in &report.runs {
        r.print();
    }
    for (k, v) in &report.ratios {
        println!("{k}: {v:.3}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    if let Some(path) = &args.svg {
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

enum System {
    Jetinfer,
    External,
    Bare,
    Python(String),
}

struct Base<'a> {
    global: &'a Global,
    args: &'a BenchArgs,
    load: &'a Load,
    pool: Arc<Vec<Vec<jetinfer_schemas::Tensor<'static>>>>,
    run_id: &'a str,
    log_root: &'a Path,
    models: &'a Path,
}

impl Base<'_> {
    async fn measure(&self, system: System) -> anyhow::Result<RunReport> {
        let args = self.args;
        let name = match &system {
            System::Jetinfer | System::External => "jetinfer",
            System::Bare => "bare-loop",
            System::Python(_) => "python",
        };
        let log_dir = self.log_root.join(name);
        let mut builder = LocalStack::builder()
            .log_dir(&log_dir)
            .env("JETINFER_KEY_PREFIX", &self.global.key_prefix)
            .timeout(Duration::from_secs_f64(args.startup_timeout_s));
        builder = match &system {
            System::Jetinfer => builder
                .workers(args.workers)
                .models(self.models)
                .dispatcher_args(["--storage".to_string(), args.storage.as_str().into()])
                .dispatcher_args(
                    args.dispatcher_args
                        .iter()
                        .filter(|a| !a.is_empty())
                        .cloned(),
                )
                .worker_args(args.worker_args.iter().filter(|a| !a.is_empty()).cloned()),
            System::External => builder
                .nats_url(self.global.nats_url())
                .redis_url(self.global.redis_url())
                .workers(0)
                .dispatcher(false),
            System::Bare | System::Python(_) => builder.workers(0).dispatcher(false),
        };
        println!("{name}: starting its stack (logs in {})", log_dir.display());
        let mut stack = builder
            .start()
            .await
            .with_context(|| format!("starting the stack for {name}"))?;
        let store_cfg = self.global.store_config(stack.redis_url());
        let client = super::connect(stack.nats_url(), &store_cfg).await?;
        // One producer connection per priority (see bench::run::run).
        let producers = [
            client.clone(),
            super::connect(stack.nats_url(), &store_cfg).await?,
            super::connect(stack.nats_url(), &store_cfg).await?,
        ];
        let notices = async_nats::connect(stack.nats_url())
            .await
            .context("second NATS connection")?;
        let stop = tokio_util::sync::CancellationToken::new();
        let mut extra: Option<Process> = None;
        let prefix = match &system {
            System::Bare => {
                let nats = async_nats::connect(stack.nats_url())
                    .await
                    .context("bare loop connection")?;
                bare::start(
                    nats,
                    client.store().clone(),
                    args.storage.js(),
                    stop.clone(),
                )
                .await?;
                bare::BARE_PREFIX.to_string()
            }
            System::Python(cmd) => {
                let js = jetstream::new(client.nats().clone());
                create_jobs_stream(&js, args.storage.js()).await?;
                let mut words = cmd.split_whitespace();
                let program = words.next().context("--python-worker is empty")?;
                let mut p = Process::start(
                    "python-worker",
                    program,
                    words,
                    [
                        ("NATS_URL", stack.nats_url().to_string()),
                        ("REDIS_URL", stack.redis_url().to_string()),
                        ("JETINFER_MODELS", self.models.display().to_string()),
                        ("JETINFER_KEY_PREFIX", self.global.key_prefix.clone()),
                        ("PYTHONUNBUFFERED", "1".into()),
                    ],
                    log_dir.join("python-worker.log"),
                )?;
                wait_for_consumer(&js, &mut p, Duration::from_secs_f64(args.startup_timeout_s))
                    .await?;
                extra = Some(p);
                JOBS_PREFIX.to_string()
            }
            _ => JOBS_PREFIX.to_string(),
        };
        let mut service_pids: Vec<u32> = stack.workers().iter().map(|w| w.pid()).collect();
        if let Some(d) = stack.dispatcher() {
            service_pids.push(d.pid());
        }
        if let Some(p) = &extra {
            service_pids.push(p.pid());
        }
        let mut server_pids = Vec::new();
        if let Some(n) = stack.nats_server() {
            server_pids.push(n.pid());
        }
        if let Some(r) = stack.redis_server() {
            server_pids.push(r.pid());
        }
        let sum = |pids: &[u32]| -> Option<f64> {
            if pids.is_empty() {
                return None;
            }
            pids.iter().map(|&p| cpu_seconds(p)).sum()
        };
        let (svc0, srv0) = (sum(&service_pids), sum(&server_pids));
        // Per process too, so a report says which one the CPU went to.
        let mut named: Vec<(String, u32)> = stack
            .workers()
            .iter()
            .map(|w| (w.name().to_string(), w.pid()))
            .collect();
        if let Some(d) = stack.dispatcher() {
            named.push(("dispatcher".into(), d.pid()));
        }
        if let Some(p) = &extra {
            named.push(("python-worker".into(), p.pid()));
        }
        if let Some(n) = stack.nats_server() {
            named.push(("nats-server".into(), n.pid()));
        }
        if let Some(r) = stack.redis_server() {
            named.push(("redis-server".into(), r.pid()));
        }
        // The load generator shares the machine: its own CPU says how much it took (the
        // bare loop's consumer runs inside it too).
        named.push(("jetinfer-bench".into(), std::process::id()));
        let before: Vec<Option<f64>> = named.iter().map(|(_, p)| cpu_seconds(*p)).collect();

        let bar = ProgressBar::new((args.duration_s * 10.0) as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg} {elapsed}")
                .expect("a valid progress template: this is a bug")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        let spec = RunSpec {
            subject_prefix: prefix,
            model: self.args.model.clone(),
            pool: self.pool.clone(),
            load: self.load.clone(),
            duration: Duration::from_secs_f64(args.duration_s),
            warmup: Duration::from_secs_f64(args.warmup_s),
            drain: Duration::from_secs_f64(args.drain_s),
            id_prefix: format!("bench{}{}", self.run_id, &name[..2]),
            max_publishing: args.max_publishing,
        };
        let started = Instant::now();
        let result = run::run(&producers, &notices, spec, &bar).await;
        bar.finish_and_clear();
        let (svc1, srv1) = (sum(&service_pids), sum(&server_pids));
        let completed = result.rec.ok + result.rec.errors.values().sum::<u64>();
        let service_s = svc0.zip(svc1).map(|(a, b)| b - a);
        let servers_s = srv0.zip(srv1).map(|(a, b)| b - a);
        let per = |s: Option<f64>| s.filter(|&v| v > 0.0).map(|v| completed as f64 / v);
        let per_process = named
            .iter()
            .zip(before)
            .filter_map(|((n, p), b)| Some((n.clone(), cpu_seconds(*p)? - b?)))
            .collect();
        let cpu = CpuReport {
            service_s,
            servers_s,
            per_process,
            jobs_per_service_cpu_s: per(service_s),
            jobs_per_total_cpu_s: per(service_s.zip(servers_s).map(|(a, b)| a + b)),
        };
        println!(
            "{name}: measured in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let report = RunReport::new(
            name,
            self.load.clone(),
            args.duration_s,
            args.warmup_s,
            &result,
            cpu,
        );
        stop.cancel();
        if let Some(mut p) = extra {
            p.kill();
        }
        if report.missing > 0 || report.ok == 0 {
            let _ = stack.check_alive("the benchmark ran");
            eprintln!(
                "{name}: {} jobs missing; logs in {}",
                report.missing,
                log_dir.display()
            );
        }
        if !matches!(system, System::External) {
            stack.stop();
        }
        Ok(report)
    }
}

/// The jobs stream as the dispatcher makes it (for a baseline that runs without one).
async fn create_jobs_stream(
    js: &jetstream::Context,
    storage: stream::StorageType,
) -> anyhow::Result<()> {
    let jobs = jetinfer_connect::streams::JobsStream {
        storage,
        ..Default::default()
    };
    js.get_or_create_stream(jobs.config())
        .await
        .context("creating the jobs stream")?;
    Ok(())
}

/// Waits until the baseline worker has made its consumer on the jobs stream.
async fn wait_for_consumer(
    js: &jetstream::Context,
    p: &mut Process,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = js.get_stream(JOBS_STREAM).await {
            if let Ok(info) = s.info().await {
                if info.state.consumer_count > 0 {
                    // Its first pull request may still be on the way.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(());
                }
            }
        }
        p.check_running("starting")?;
        if Instant::now() > deadline {
            bail!("the baseline worker made no consumer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `jetinfer-worker ceiling` and returns the JSON it prints last.
fn ceiling(
    models: &Path,
    model: &str,
    batch: u32,
    seconds: f64,
    dyn_len: i64,
    log_root: &Path,
) -> anyhow::Result<serde_json::Value> {
    let worker = binary("jetinfer-worker")?;
    println!(
        "ceiling: {} ceiling --model {model} --batch {batch} --seconds {seconds}",
        worker.display()
    );
    let out = std::process::Command::new(&worker)
        .args(["ceiling", "--models"])
        .arg(models)
        .args([
            "--model",
            model,
            "--batch",
            &batch.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--dyn-len",
            &dyn_len.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", worker.display()))?;
    let _ = std::fs::write(log_root.join("ceiling.log"), &out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // libtorch appends a long backtrace: show the lines that say what went wrong.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("rror") || l.contains("xception"))
            .take(4)
            .collect();
        bail!(
            "the ceiling run failed ({}): {}",
            out.status,
            why.join(" | ")
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the ceiling run printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}

/// CPU model and count, for the report.
fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{n} × {cpu}")
}

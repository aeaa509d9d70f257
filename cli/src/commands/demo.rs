//! `jetinfer demo`: the main job end to end. Starts a local stack (nats-server,
//! redis-server, a dispatcher, N workers) unless servers are given, publishes golden jobs
//! across P0/P1/P2, polls every result from Redis, checks each against the golden outputs,
//! and prints a per-priority table. Exit code 0 only if every result is present and right.
//!
//! - [`plan`]: which job goes when; [`publish`]: publishing with acks in flight;
//!   [`collect`]: polling results; [`report`]: verdicts, percentiles, the table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_devkit::golden::{compare, Golden};
use jetinfer_devkit::local::{repo_root, resolve_path, LocalStack};
use jetinfer_schemas::Status;

use super::Global;
use jetinfer_devkit::demo::report::{Outcome, Verdict};
use jetinfer_devkit::demo::{collect, plan, publish, report};

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
    let mix: [u32; 3] = args
        .mix
        .as_slice()
        .try_into()
        .context("--mix takes three weights: P0,P1,P2")?;
    let golden_dir = resolve_path(&args.golden);
    let golden = Golden::load(&golden_dir)?;
    let models: Vec<_> = golden
        .models()
        .iter()
        .filter(|m| !m.samples.is_empty())
        .cloned()
        .collect();
    if models.is_empty() {
        bail!(
            "{} names no model with samples",
            golden_dir.join("golden.json").display()
        );
    }
    let run = format!("{:08x}", rand::random::<u32>());
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    println!(
        "demo run {run}: {} jobs over {} (P0/P1/P2 weights {mix:?})",
        args.jobs,
        names.join(", ")
    );

    // Start what was not given: both URLs given means "use the running stack".
    let mut stack = match (&global.connect.nats_url, &global.connect.redis_url) {
        (Some(_), Some(_)) => {
            println!(
                "using the running stack at {} and {}",
                global.nats_url(),
                global.redis_url()
            );
            None
        }
        _ => Some(start_stack(global, &args, &run).await?),
    };
    let (nats_url, redis_url) = match &stack {
        Some(s) => (s.nats_url().to_string(), s.redis_url().to_string()),
        None => (
            global.nats_url().to_string(),
            global.redis_url().to_string(),
        ),
    };
    // Ctrl-C still stops the stack gracefully (workers drain, temp folders are removed).
    let store = global.store_config(&redis_url);
    let outcome = tokio::select! {
        outcome = exercise(&nats_url, &store, &args, mix, &run, &models) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(stack) = stack.as_mut() {
        let failed = !matches!(outcome, Ok(true));
        if failed {
            if let Err(e) = stack.check_alive("the demo ran") {
                eprintln!("{e}");
            }
            eprintln!("logs of the local stack: {}", stack.log_dir().display());
        }
        stack.stop();
    }
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn start_stack(global: &Global, args: &DemoArgs, run: &str) -> anyhow::Result<LocalStack> {
    let log_dir = match &args.log_dir {
        Some(d) => d.clone(),
        None => repo_root()?.join("target/demo-logs").join(run),
    };
    let mut builder = LocalStack::builder()
        .workers(args.workers)
        .models(resolve_path(&args.models))
        .dispatcher_args(
            args.dispatcher_args
                .iter()
                .filter(|a| !a.is_empty())
                .cloned(),
        )
        .worker_args(args.worker_args.iter().filter(|a| !a.is_empty()).cloned())
        // The processes must use the same keys as this client.
        .env("JETINFER_KEY_PREFIX", &global.key_prefix)
        .log_dir(&log_dir)
        .timeout(Duration::from_secs_f64(args.startup_timeout_s));
    if let Some(url) = &global.connect.nats_url {
        builder = builder.nats_url(url);
    }
    if let Some(url) = &global.connect.redis_url {
        builder = builder.redis_url(url);
    }
    println!(
        "starting the local stack: {} worker(s), logs in {}",
        args.workers,
        log_dir.display()
    );
    let started = Instant::now();
    let stack = builder.start().await.context("starting the local stack")?;
    println!(
        "stack ready in {:.1} s (nats {}, redis {})",
        started.elapsed().as_secs_f64(),
        stack.nats_url(),
        stack.redis_url()
    );
    Ok(stack)
}

/// Publishes, collects, checks and reports; true when every result is present and right.
async fn exercise(
    nats_url: &str,
    store: &jetinfer_client::StoreConfig,
    args: &DemoArgs,
    mix: [u32; 3],
    run: &str,
    models: &[jetinfer_devkit::golden::GoldenModel],
) -> anyhow::Result<bool> {
    let client = super::connect(nats_url, store).await?;
    client
        .store()
        .ping()
        .await
        .with_context(|| format!("reaching Redis at {}", store.url))?;
    let counts: Vec<usize> = models.iter().map(|m| m.samples.len()).collect();
    let plan = plan::plan(run, args.jobs, mix, &counts, rand::random());

    let bar = progress(plan.len(), "publish");
    let started = Instant::now();
    let sent = publish::publish_all(&client, &plan, models, args.cache, args.in_flight, &bar).await;
    bar.finish_and_clear();
    let refused = sent.iter().filter(|s| s.error.is_some()).count();
    let took = started.elapsed().as_secs_f64();
    println!(
        "published {} jobs in {took:.2} s ({:.0}/s), {refused} refused",
        plan.len() - refused,
        plan.len() as f64 / took.max(1e-9)
    );
    if let Some(e) = sent.iter().find_map(|s| s.error.as_ref()) {
        println!("  first refusal: {e}");
    }

    let timeout = Duration::from_secs_f64(args.timeout_s.unwrap_or(60.0 + 0.02 * args.jobs as f64));
    let ids: Vec<String> = plan.iter().map(|p| p.id.clone()).collect();
    let wanted: Vec<bool> = sent.iter().map(|s| s.error.is_none()).collect();
    let bar = progress(plan.len() - refused, "results");
    let seen = collect::collect(
        client.store(),
        &ids,
        &wanted,
        Instant::now() + timeout,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    let present = seen.iter().filter(|s| s.is_some()).count();
    println!(
        "collected {present} of {} results in {:.2} s",
        plan.len() - refused,
        started.elapsed().as_secs_f64()
    );

    let outcomes: Vec<Outcome> = plan
        .iter()
        .zip(&sent)
        .zip(seen)
        .map(|((planned, sent), seen)| {
            judge(
                &models[planned.model].samples[planned.sample].outputs,
                planned.priority,
                sent,
                seen,
                args,
            )
        })
        .collect();
    let rows = report::summarize(&outcomes);
    println!();
    print!("{}", report::render(&rows));
    print_failures(&plan, &outcomes);
    Ok(rows.last().is_some_and(|all| all.all_correct()))
}

fn judge(
    expected: &[jetinfer_schemas::Tensor<'static>],
    priority: jetinfer_schemas::Priority,
    sent: &publish::Sent,
    seen: Option<collect::Seen>,
    args: &DemoArgs,
) -> Outcome {
    let mut outcome = Outcome {
        priority,
        verdict: Verdict::Missing,
        published_ms: sent.published_ms,
        completed_ms: None,
        server_ms: None,
        polled_ms: None,
        batch_size: 0,
        cached: false,
    };
    if let Some(e) = &sent.error {
        outcome.verdict = Verdict::NotPublished(e.clone());
        return outcome;
    }
    let Some(seen) = seen else { return outcome };
    let result = match seen.result {
        Ok(r) => r,
        Err(e) => {
            outcome.verdict = Verdict::Failed {
                code: "undecodable".into(),
                message: e,
            };
            return outcome;
        }
    };
    outcome.completed_ms = Some(result.completed_at_ms);
    outcome.server_ms = Some(result.timings.total_ms);
    outcome.polled_ms = Some(
        seen.seen_at
            .saturating_duration_since(sent.published_at)
            .as_secs_f64()
            * 1000.0,
    );
    outcome.batch_size = result.timings.batch_size;
    outcome.cached = result.cached;
    outcome.verdict = match result.status {
        Status::Ok => match compare(expected, &result.outputs, args.atol, args.rtol) {
            Ok(()) => Verdict::Correct,
            Err(why) => Verdict::Wrong(why),
        },
        Status::Error | Status::Expired => {
            let code = result
                .error_code()
                .map_or(result.status.as_str(), |c| c.as_str())
                .to_string();
            let message = result.error.map(|e| e.message).unwrap_or_default();
            Verdict::Failed { code, message }
        }
    };
    outcome
}

/// A few examples of each kind of failure, so a red run says why.
fn print_failures(plan: &[plan::PlannedJob], outcomes: &[Outcome]) {
    const SHOW: usize = 5;
    let mut shown = [0usize; 4];
    for (planned, o) in plan.iter().zip(outcomes) {
        let (kind, text) = match &o.verdict {
            Verdict::Correct => continue,
            Verdict::Wrong(why) => (0, format!("wrong: {why}")),
            Verdict::Failed { code, message } => (1, format!("{code}: {message}")),
            Verdict::NotPublished(e) => (2, format!("not published: {e}")),
            Verdict::Missing => (3, "no result".to_string()),
        };
        if shown[kind] < SHOW {
            shown[kind] += 1;
            println!("  {} ({}): {text}", planned.id, planned.priority);
        }
    }
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
            .expect("a valid progress template: this is a bug")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

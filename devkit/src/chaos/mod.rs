//! The fault suite: cases 1–17 of `reliability-cases.md` against real processes.
//!
//! Each scenario starts its own nats-server (JetStream, file storage), a redis-server with
//! the append-only file fsynced on every write, a dispatcher and two workers (recording
//! their forward runs per job in Redis), publishes `jobs` golden `mlp` jobs at a steady
//! `rate`, injects one fault a third of the way in ([`inject`]), waits for recovery, and
//! reports ([`report`]): published (acknowledged by JetStream), completed, lost, duplicate
//! executions, wrong results, p50/p99 latency of jobs published in the fault window, and
//! time to recover. A scenario passes when lost = 0, wrong = 0 and its own checks hold.
//!
//! `jetinfer chaos` runs it from the CLI (the long version); `tests/tests/chaos.rs` runs a
//! short version of every scenario in CI.

mod check;
mod env;
mod inject;
mod load;
pub mod report;
mod triggers;

use std::path::PathBuf;
use std::time::Duration;

pub use report::Report;

/// The scenarios, by case number of reliability-cases.md.
pub const SCENARIOS: &[(u32, &str)] = &[
    (1, "kill -9 a worker holding a batch"),
    (2, "worker dies after storing results, before the ack"),
    (
        3,
        "SIGSTOP a worker past the heartbeat timeout, then SIGCONT",
    ),
    (4, "SIGSTOP a worker shorter than the timeout"),
    (5, "kill -9 the dispatcher, start a new one"),
    (6, "kill -9 nats-server (file storage) and restart it"),
    (7, "Redis unavailable (SIGSTOP) for the outage time"),
    (8, "kill -9 redis-server (AOF) and restart it"),
    (9, "rolling restart of all workers (SIGTERM)"),
    (10, "CUDA out of memory in batches above 4 (injected)"),
    (11, "sticky CUDA error from a poison job (injected)"),
    (12, "hung forward from a poison job (injected)"),
    (13, "a model file whose sha256 does not match"),
    (
        14,
        "P2 burst of 10,000 against a 3,000-job per-subject limit",
    ),
    (
        15,
        "P0 flood (20 x jobs, at most 15,000) while P2 trickles in",
    ),
    (16, "deadlines pass while jobs are queued"),
    (17, "a producer's clock runs 20 s behind (tolerance 30 s)"),
];

/// How hard to push.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Load jobs per scenario.
    pub jobs: usize,
    /// Publish rate, jobs per second.
    pub rate: f64,
    /// How long Redis stays unavailable in case 7.
    pub redis_outage: Duration,
    /// Where process logs go (a temporary folder when None).
    pub log_dir: Option<PathBuf>,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            jobs: 600,
            rate: 300.0,
            redis_outage: Duration::from_secs(5),
            log_dir: None,
        }
    }
}

/// Everything that can stop a scenario from producing a report.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("unknown scenario {0} (see `jetinfer chaos --list`)")]
    UnknownScenario(u32),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
    #[error(transparent)]
    Client(#[from] jetinfer_client::ClientError),
    #[error(transparent)]
    Store(#[from] jetinfer_client::StoreError),
    #[error(transparent)]
    Golden(#[from] crate::golden::GoldenError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A setup task panicked or was cancelled.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// The stack has no process of this name (`dispatcher`, `worker-1`, …).
    #[error("no {0}")]
    NoProcess(String),
}

/// Runs one scenario and reports on it.
pub async fn run(case: u32, opts: &ChaosOptions) -> Result<Report, ChaosError> {
    let name = SCENARIOS
        .iter()
        .find(|(c, _)| *c == case)
        .map(|(_, n)| *n)
        .ok_or(ChaosError::UnknownScenario(case))?;
    let mut env = env::Env::start(case, opts).await?;
    let load = load::Load::start(env.client.clone(), &env.samples, opts, case);
    // The fault comes a third of the way into the publishing.
    tokio::time::sleep(Duration::from_secs_f64(opts.jobs as f64 / opts.rate / 3.0)).await;
    let fault = inject::inject(case, &mut env, opts).await?;
    let published = load.finish().await;
    let settle = Duration::from_secs(60) + opts.redis_outage;
    let mut report = report::measure(case, name, &mut env, &published, &fault, settle).await?;
    report.checks.extend(fault.checks);
    if case == 14 {
        // P0's bound is its default deadline (5 s): a P2 burst must not push P0 past it.
        let p99 = report.fault_p0_p99_ms;
        report.checks.push(check::Check {
            what: format!("P0 p99 during the burst {p99:.0} ms (bound 5000 ms)"),
            ok: p99 < 5_000.0,
        });
    }
    env.stack.stop();
    Ok(report)
}

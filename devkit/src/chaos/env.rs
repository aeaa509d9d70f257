//! The processes of one scenario: servers held here (so faults can kill and restart them)
//! and a dispatcher plus workers through [`LocalStack`].

use std::time::Duration;

use crate::golden::{Golden, Sample};
use crate::local::{repo_root, wait_for_workers, LocalStack, NatsServer, RedisServer};
use jetinfer_client::Client;

use super::triggers::{POISON_HANG, POISON_STICKY};
use super::{ChaosError, ChaosOptions};

/// Settings that make faults visible within seconds rather than minutes.
const DISPATCHER_ARGS: &[&str] = &[
    "--ack-wait-ms",
    "4000",
    "--heartbeat-timeout-ms",
    "2000",
    "--unknown-model-after-ms",
    "2000",
    "--max-attempts",
    "3",
    "--dispatch-timeout-ms",
    "10000",
];

pub(crate) struct Env {
    // Field order is drop order: processes before the servers they talk to.
    pub stack: LocalStack,
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub client: Client,
    pub samples: Vec<Sample>,
}

impl Env {
    pub async fn start(case: u32, opts: &ChaosOptions) -> Result<Env, ChaosError> {
        let (nats, redis) = tokio::task::spawn_blocking(|| {
            Ok::<_, crate::local::LocalError>((
                NatsServer::start()?,
                RedisServer::start_persistent()?,
            ))
        })
        .await??;
        let root = repo_root()?;
        let mut worker_args: Vec<String> = vec!["--record-executions".into()];
        let mut models = root.join("models/out/models.toml");
        match case {
            10 => worker_args.extend(["--inject-faults".into(), "oom_above=4".into()]),
            11 => worker_args.extend([
                "--inject-faults".into(),
                format!("sticky_on={}", POISON_STICKY),
            ]),
            12 => worker_args.extend([
                "--inject-faults".into(),
                format!("hang_on={}", POISON_HANG),
                "--forward-timeout-ms".into(),
                "1500".into(),
            ]),
            13 => models = bad_sha_models(&root)?,
            // Fewer slots than P0's in-flight cap, so P0 really saturates the pool.
            15 => worker_args.extend(["--slots".into(), "16".into()]),
            _ => {}
        }
        let workers = if case == 2 { 1 } else { 2 };
        let extra_dispatcher_args: &[&str] = match case {
            14 => &["--stream-max-msgs-per-subject", "3000"],
            15 => &["--aging-ms", "1000"],
            17 => &["--clock-skew-tolerance-ms", "30000"],
            _ => &[],
        };
        let mut builder = LocalStack::builder()
            .nats_url(nats.url())
            .redis_url(redis.url())
            .models(models)
            .workers(workers)
            .dispatcher_args(DISPATCHER_ARGS.iter().chain(extra_dispatcher_args).copied())
            .worker_args(worker_args)
            .env("RUST_LOG", "info");
        if let Some(dir) = &opts.log_dir {
            builder = builder.log_dir(dir.join(format!("case-{case}")));
        }
        let mut stack = builder.start().await?;
        if case == 2 {
            // worker-1 crashes right after storing its 10th batch, before replying.
            stack.start_worker(["--inject-faults", "exit_after_store=10"])?;
            wait_for_workers(&stack.connect_nats().await?, 2, Duration::from_secs(60)).await?;
        }
        let client = stack.client().await?;
        let golden = Golden::load(root.join("models/out"))?;
        Ok(Env {
            stack,
            nats,
            redis,
            client,
            samples: golden.samples("mlp"),
        })
    }
}

impl Env {
    /// Keeps `n` workers running, as a supervisor would: replaces those that exited (the
    /// poison scenarios kill them on purpose).
    pub fn supervise(&mut self, n: usize) -> Result<(), ChaosError> {
        let running = self
            .stack
            .workers()
            .iter_mut()
            .map(|w| w.is_running())
            .filter(|&up| up)
            .count();
        for _ in running..n {
            self.stack.start_worker(Vec::<String>::new())?;
        }
        Ok(())
    }
}

/// A copy of the models file in which `pair`'s checksum is wrong (case 13).
fn bad_sha_models(root: &std::path::Path) -> Result<std::path::PathBuf, ChaosError> {
    let src = root.join("models/out/models.toml");
    let text = std::fs::read_to_string(&src).map_err(|source| ChaosError::Io {
        path: src.clone(),
        source,
    })?;
    let mut out = String::new();
    let mut in_pair = false;
    for line in text.lines() {
        if line.trim_start().starts_with("name") {
            in_pair = line.contains("\"pair\"");
        }
        if in_pair && line.trim_start().starts_with("sha256") {
            out.push_str(&format!("sha256 = \"{}\"\n", "0".repeat(64)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let dst = root.join("models/out/models.badsha.toml");
    std::fs::write(&dst, out).map_err(|source| ChaosError::Io {
        path: dst.clone(),
        source,
    })?;
    Ok(dst)
}

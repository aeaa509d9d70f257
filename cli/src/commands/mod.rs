//! The `jetinfer` subcommands, one module each, sharing the global connection flags.
//!
//! - `submit`: publish one job from `.npy` / `.json` input files ([`submit`], [`input`]).
//! - `get`, `wait`: print a result as JSON ([`show`]).
//! - `stats`: queue depths per priority and the workers heard ([`stats`]).
//! - `demo`: start a local stack, run golden jobs through it, check and report ([`demo`]).
//! - `chaos`: the fault suite on real processes ([`chaos`]).
//! - `dlq`: list and replay dead letters ([`dlq`]).
//! - `bench`: load generator and measurements against ceiling and baselines ([`bench`]).
//!
//! Exit codes: 0 success, 1 failure, 2 "not finished yet" (`get`, `wait`, `submit --wait`).

mod bench;
mod chaos;
mod demo;
mod dlq;
mod input;
mod show;
mod stats;
mod submit;

use std::process::ExitCode;

use anyhow::Context;
use jetinfer_client::{Client, StoreConfig};
use jetinfer_connect::ConnectArgs;
use jetinfer_schemas::Keys;

/// Exit code for "the job has no result yet".
pub const EXIT_PENDING: u8 = 2;

/// Command line of `jetinfer`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "jetinfer",
    version,
    about = "Submit inference jobs to jetinfer, read results, inspect queues, run the demo"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes (before or after the subcommand name).
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Where NATS and Redis are. For `demo` and `bench`, giving `--nats-url` means "use the
    /// running stack" instead of starting one.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Prefix of the Redis keys.
    #[arg(long, env = "JETINFER_KEY_PREFIX", global = true, default_value = jetinfer_schemas::names::DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,
}

impl Global {
    pub fn nats_url(&self) -> &str {
        self.connect.nats_url()
    }

    pub fn redis_url(&self) -> &str {
        self.connect.redis_url()
    }

    /// The store configuration for a Redis URL with this key prefix.
    pub fn store_config(&self, redis_url: &str) -> StoreConfig {
        StoreConfig {
            keys: Keys::new(&self.key_prefix),
            ..StoreConfig::new(redis_url)
        }
    }

    /// A client for the given (or default) servers.
    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(self.nats_url(), &self.store_config(self.redis_url())).await
    }
}

/// Connects a client; the errors name the servers.
pub async fn connect(nats_url: &str, store: &StoreConfig) -> anyhow::Result<Client> {
    Client::connect(nats_url, store)
        .await
        .with_context(|| format!("connecting to {nats_url} and {}", store.url))
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Publish one job and print its id.
    Submit(submit::SubmitArgs),
    /// Print a job's result as JSON (exit code 2 while it is pending).
    Get(show::GetArgs),
    /// Wait for a job's result and print it as JSON (exit code 2 on timeout).
    Wait(show::WaitArgs),
    /// Queue depths per priority and the workers heard on the heartbeat subject.
    Stats(stats::StatsArgs),
    /// Run golden jobs through a local stack (or a running one), check every result, and
    /// print latency and throughput per priority.
    Demo(demo::DemoArgs),
    /// Load one model's jobs open- or closed-loop and measure throughput and latency per
    /// priority, against the model's ceiling, a bare queue loop or a Python worker.
    Bench(bench::BenchArgs),
    /// Run the fault suite (cases 1–16 of the reliability cases) on real processes.
    Chaos(chaos::ChaosArgs),
    /// List or replay dead letters (jobs that became `poison`).
    Dlq(dlq::DlqArgs),
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Submit(args) => submit::run(&cli.global, args).await,
        Command::Get(args) => show::get(&cli.global, args).await,
        Command::Wait(args) => show::wait(&cli.global, args).await,
        Command::Stats(args) => stats::run(&cli.global, args).await,
        Command::Demo(args) => demo::run(&cli.global, args).await,
        Command::Bench(args) => bench::run(&cli.global, args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Dlq(args) => dlq::run(&cli.global, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "jetinfer",
            "get",
            "abc",
            "--nats-url",
            "nats://x:1",
            "--key-prefix",
            "p",
        ])
        .unwrap();
        assert_eq!(cli.global.nats_url(), "nats://x:1");
        assert_eq!(cli.global.key_prefix, "p");
        let cli = Cli::try_parse_from(["jetinfer", "--redis-url", "redis://y", "stats"]).unwrap();
        assert_eq!(cli.global.redis_url(), "redis://y");
        let cli = Cli::try_parse_from([
            "jetinfer",
            "submit",
            "--model",
            "mlp",
            "--priority",
            "p0",
            "--meta",
            "a=b",
            "--meta",
            "c=d=e",
            "--input",
            "x.npy",
            "y.json",
        ])
        .unwrap();
        let Command::Submit(s) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(s.inputs.len(), 2);
        assert_eq!(
            s.meta,
            vec![
                ("a".to_string(), "b".to_string()),
                ("c".to_string(), "d=e".to_string())
            ]
        );
        assert!(Cli::try_parse_from([
            "jetinfer",
            "submit",
            "--model",
            "m",
            "--input",
            "x",
            "--priority",
            "p9"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["jetinfer", "submit", "--model", "m"]).is_err(),
            "inputs are required"
        );
        let cli = Cli::try_parse_from([
            "jetinfer",
            "demo",
            "--mix",
            "0,0,1",
            "--worker-arg",
            "--slots 8",
            "--worker-arg=-v",
        ])
        .unwrap();
        let Command::Demo(d) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(d.mix, vec![0, 0, 1]);
        assert_eq!(d.worker_args, vec!["--slots", "8", "-v"]);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

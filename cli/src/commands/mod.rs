//! The `jetinfer` subcommands, one module each, sharing the global connection flags.
//!
//! - `submit`: publish one job from `.npy` / `.json` input files or stdin ([`submit`],
//!   [`input`]).
//! - `get`, `wait`: print a result as JSON ([`show`]).
//! - `status`: the result, or where the job is ([`status`], lookups in [`locate`]).
//! - `models`: what is served, where, input specs, queue depth per model; and the model
//!   registry: `list`, `show`, `history`, `declare`, `seed`, `default`, `weights`,
//!   `rollback` ([`models`]).
//! - `stats`: queue depths per priority and the workers heard ([`stats`]).
//! - `demo`: start a local stack, run golden jobs through it, check and report ([`demo`]).
//! - `chaos`: the fault suite on real processes ([`chaos`]).
//! - `dlq`: list and replay dead letters ([`dlq`]).
//! - `bench`: load generator and measurements against ceiling and baselines ([`bench`]).
//! - [`output`]: `--json`, result printing and exit codes; [`heartbeats`]: listening to
//!   workers; [`servers`]: which servers `demo` and `bench` use.
//!
//! Exit codes: 0 success, 1 failure, 2 "not finished yet" (`get`, `wait`, `submit --wait`,
//! `status`), 3 "finished with status error or expired" (same commands), 4 "unknown job"
//! (`status`).

mod bench;
mod chaos;
mod demo;
mod dlq;
mod heartbeats;
mod input;
mod locate;
mod models;
pub mod output;
pub mod servers;
mod show;
mod stats;
mod status;
mod submit;

use std::process::ExitCode;

use anyhow::Context;
use jetinfer_client::{Client, StoreConfig};
use jetinfer_connect::ConnectArgs;
use jetinfer_schemas::Keys;

/// Command line of `jetinfer`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "jetinfer",
    version,
    about = "Submit inference jobs to jetinfer, read results, find jobs, inspect models and queues, run the demo",
    after_help = "Exit codes: 0 success; 1 failure; 2 no result yet (get, wait, submit --wait, status); \
3 the job finished with status error or expired; 4 status knows nothing of the job.\n\
Every command that prints takes --json (one JSON document on stdout)."
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
    /// Where NATS and Redis are. `demo` and `bench` start their own servers unless given
    /// `--use-running` or `--nats-url`/`--redis-url` on the command line (the NATS_URL and
    /// REDIS_URL environment variables alone do not redirect them).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Prefix of the Redis keys.
    #[arg(long, env = "JETINFER_KEY_PREFIX", global = true, default_value = jetinfer_schemas::names::DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,
    /// Which server URLs came from the command line (set by `main` from clap's matches).
    #[arg(skip)]
    pub explicit: servers::Explicit,
}

impl Global {
    pub fn nats_url(&self) -> &str {
        self.connect.nats_url()
    }

    pub fn redis_url(&self) -> &str {
        self.connect.redis_url()
    }

    /// The store configuration for a Redis URL with this key prefix and the Redis TLS
    /// flags.
    pub fn store_config(&self, redis_url: &str) -> StoreConfig {
        StoreConfig {
            keys: Keys::new(&self.key_prefix),
            tls: jetinfer_client::RedisTls {
                ca: self.connect.redis_tls_ca.clone(),
                cert: self.connect.redis_tls_cert.clone(),
                key: self.connect.redis_tls_key.clone(),
            },
            ..StoreConfig::new(redis_url)
        }
    }

    /// A client for the given (or default) servers, with the NATS credentials and TLS
    /// flags; fails at once when NATS does not answer.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let store = self.store_config(self.redis_url());
        Client::builder(self.nats_url())
            .nats(self.connect.nats())
            .store(store.clone())
            .inputs_redis_urls(self.connect.inputs_redis_urls.iter().cloned())
            .name("jetinfer-cli")
            .retry_on_initial_connect(false)
            .connect()
            .await
            .with_context(|| {
                format!(
                    "connecting to {} and {}",
                    jetinfer_client::redact_url(self.nats_url()),
                    jetinfer_client::redact_url(&store.url)
                )
            })
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Publish one job and print its id.
    Submit(submit::SubmitArgs),
    /// Print a job's result as JSON (exit code 2 while it is pending, 3 when it ended as
    /// error or expired).
    Get(show::GetArgs),
    /// Wait for a job's result and print it as JSON (exit code 2 on timeout, 3 when it
    /// ended as error or expired).
    Wait(show::WaitArgs),
    /// Where is my job? Its result, or: waiting in its stream (and how many ahead), held by
    /// a dispatcher (queued there or on a worker), runs lost, dead-lettered; with its trace
    /// id. Exit code 0 ok, 2 not finished, 3 error/expired/dead letter, 4 unknown.
    Status(status::StatusArgs),
    /// What is served: per model and version the workers (ids, devices, free slots), input
    /// specs, batch limit and jobs queued per priority. Subcommands read and change the
    /// model registry (list, show, history, declare, seed, default, weights, rollback).
    Models(models::ModelsArgs),
    /// Queue depths per priority and the workers heard on the heartbeat subject.
    Stats(stats::StatsArgs),
    /// Run golden jobs through a local stack it starts (or a running one with
    /// --use-running / --nats-url and --redis-url), check every result, and print latency
    /// and throughput per priority.
    Demo(demo::DemoArgs),
    /// Load one model's jobs open- or closed-loop and measure throughput and latency per
    /// priority, against the model's ceiling, a bare queue loop or a Python worker (on
    /// stacks it starts, or the running one with --use-running / both URLs on the command line).
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
        Command::Status(args) => status::run(&cli.global, args).await,
        Command::Models(args) => models::run(&cli.global, args).await,
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
        let cli = Cli::try_parse_from(["jetinfer", "submit", "--model", "m", "--json"]).unwrap();
        let Command::Submit(s) = cli.command else {
            panic!("not submit")
        };
        assert!(s.inputs.is_empty(), "inputs may come from stdin");
        assert!(s.output.json);
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

//! The pipeline over a NATS that wants credentials: a dispatcher and a worker started with a
//! credential flag, ready once the harness (with the same credentials) sees the jobs streams
//! and the worker's heartbeat; golden jobs through the client library and the `jetinfer` CLI.

use std::time::Duration;

use jetinfer_client::{Client, NatsSettings};
use jetinfer_devkit::local::{
    binary, repo_root, wait_for_stream, wait_for_workers, Process, RedisServer,
};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id, Expected};

/// A credential file and the two ways a jetinfer process is given it.
pub struct Cred {
    pub flag: &'static str,
    pub env: &'static str,
    pub file: String,
}

/// A dispatcher and a worker connected to NATS at `nats_url` with a credential flag and to
/// a redis-server of their own, with their logs.
pub struct Pipeline {
    // Field order is drop order: the processes go before the servers and their logs.
    worker: Process,
    dispatcher: Process,
    pub redis: RedisServer,
    logs: tempfile::TempDir,
}

impl Pipeline {
    /// Starts everything and returns once the jobs streams exist and the worker announced
    /// itself, both seen over a connection made with the same credentials (`harness`).
    pub async fn start(nats_url: &str, cred: &Cred, harness: NatsSettings) -> Pipeline {
        let redis = RedisServer::start().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let common = [
            "--nats-url",
            nats_url,
            "--redis-url",
            &redis.url(),
            cred.flag,
            &cred.file,
        ]
        .map(String::from);
        let env = [("RUST_LOG", "info")];
        let dispatcher = Process::start(
            "dispatcher",
            binary("jetinfer-dispatcher").unwrap(),
            &common,
            env,
            logs.path().join("dispatcher.log"),
        )
        .unwrap();
        let models = repo_root().unwrap().join("models/out/models.toml");
        let worker_args = [
            "--models",
            &models.display().to_string(),
            "--id",
            "worker-0",
        ];
        let worker = Process::start(
            "worker-0",
            binary("jetinfer-worker").unwrap(),
            common.iter().map(String::as_str).chain(worker_args),
            env,
            logs.path().join("worker-0.log"),
        )
        .unwrap();
        let mut pipeline = Pipeline {
            worker,
            dispatcher,
            redis,
            logs,
        };
        let nats = harness
            .connect()
            .await
            .unwrap_or_else(|e| panic!("the harness connecting: {e}"));
        let js = async_nats::jetstream::new(nats.clone());
        if let Err(e) = wait_for_stream(&js, Duration::from_secs(60)).await {
            panic!("{e}\n{}", pipeline.logs());
        }
        if let Err(e) = wait_for_workers(&nats, 1, Duration::from_secs(120)).await {
            panic!("{e}\n{}", pipeline.logs());
        }
        for p in [&mut pipeline.dispatcher, &mut pipeline.worker] {
            assert!(p.is_running(), "{} ended\n{}", p.name(), p.log());
        }
        pipeline
    }

    pub fn logs(&self) -> String {
        format!(
            "==> dispatcher <==\n{}\n==> worker-0 <==\n{}",
            self.dispatcher.log_tail(30),
            self.worker.log_tail(30)
        )
    }

    /// Runs `jetinfer submit --wait` for golden sample `i` of `model`, given `cred` by its
    /// flag or, with `by_env`, its environment variable; returns what the result must be.
    async fn submit_with_cli(
        &self,
        nats_url: &str,
        (cred, by_env): (&Cred, bool),
        (model, i): (&str, usize),
        id: &str,
    ) -> Expected {
        let sample = golden().samples(model).remove(i);
        let mut command = tokio::process::Command::new(binary("jetinfer").unwrap());
        if by_env {
            command.env(cred.env, &cred.file);
        } else {
            command.args([cred.flag, &cred.file]);
        }
        let mut args: Vec<String> = [
            "--nats-url",
            nats_url,
            "--redis-url",
            &self.redis.url(),
            "submit",
            "--model",
            model,
            "--id",
            id,
            "--wait",
        ]
        .map(String::from)
        .to_vec();
        for (i, input) in sample.inputs.iter().enumerate() {
            let path = self.logs.path().join(format!("{id}-{i}.npy"));
            jetinfer_devkit::npy::write(&path, input).unwrap();
            args.extend(["--input".to_string(), path.display().to_string()]);
        }
        let out = command
            .args(&args)
            .output()
            .await
            .expect("running jetinfer");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "jetinfer submit: {}\n{said}\n{}",
            out.status,
            self.logs()
        );
        let how = if by_env { cred.env } else { cred.flag };
        println!("jetinfer submit --wait with {how}: {}", said.trim());
        Expected {
            id: id.to_string(),
            priority: Priority::P1,
            expected: sample.outputs,
        }
    }
}

/// Golden jobs through the client library and the CLI (credential by flag and by
/// environment variable), all correct.
pub async fn golden_jobs_come_out_right(
    pipeline: &Pipeline,
    client: &Client,
    nats_url: &str,
    cred: &Cred,
    test: &str,
) {
    let run = run_id(test);
    let mut jobs = publish_samples(client, "mlp", 40, Priority::P1, &run).await;
    for (i, by_env) in [false, true].into_iter().enumerate() {
        let id = format!("{run}-cli-{i}");
        jobs.push(
            pipeline
                .submit_with_cli(nats_url, (cred, by_env), ("pair", i), &id)
                .await,
        );
    }
    assert_all_correct(client, &jobs, Duration::from_secs(60)).await;
}

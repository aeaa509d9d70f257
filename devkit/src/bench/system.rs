//! One system under load: its own stack (fresh servers, or the running stack for
//! jetinfer), the same offered load and the same measurement ([`run::run`]) for the jetinfer
//! pipeline, the bare loop and the Python baseline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use jetinfer_client::{Client, InputStores, StoreConfig};
use jetinfer_schemas::names::JOBS_PREFIX;
use jetinfer_schemas::{Keys, Priority, Tensor};

use super::baseline::{self, BaselineEnv};
use super::cpu::{CpuWatch, Tracked};
use super::events::{Event, Observer};
use super::load::Load;
use super::options::BenchOptions;
use super::report::RunReport;
use super::run::{self, RunSpec};
use super::{bare, BenchError};
use crate::local::{LocalStack, Process, RedisServer};

/// What is measured.
#[derive(Debug, Clone)]
pub enum System {
    /// The pipeline on a fresh local stack.
    Jetinfer,
    /// The pipeline on the running stack.
    External,
    /// The bare JetStream → Redis loop, or with [`bare::Hops::Two`] the bare relay.
    Bare(bare::Hops),
    /// A baseline worker command.
    Python(String),
}

impl System {
    /// The name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            System::Jetinfer | System::External => "jetinfer",
            System::Bare(bare::Hops::One) => "bare-loop",
            System::Bare(bare::Hops::Two) => "bare-relay",
            System::Python(_) => "python",
        }
    }
}

/// What every system's run shares.
pub struct Bench<'a> {
    pub opts: &'a BenchOptions,
    pub load: &'a Load,
    pub pool: Arc<Vec<Vec<Tensor<'static>>>>,
    pub run_id: &'a str,
    pub log_root: &'a Path,
    /// The models TOML, resolved.
    pub models: &'a Path,
    pub observer: &'a dyn Observer,
}

/// The clients of one run: one producer per priority and a connection for the notices.
struct Clients {
    producers: [Client; 3],
    notices: async_nats::Client,
}

impl Bench<'_> {
    /// Starts `system`'s stack, runs the load against it and reports.
    pub async fn measure(&self, system: System) -> Result<RunReport, BenchError> {
        let name = system.name();
        let log_dir = self.log_root.join(name);
        self.observer.event(Event::StackStarting {
            system: name,
            log_dir: &log_dir,
        });
        let input_stores =
            self.start_input_stores(&system)
                .map_err(|source| BenchError::Stack {
                    system: name,
                    source,
                })?;
        let input_urls: Vec<String> = input_stores.iter().map(RedisServer::url).collect();
        let mut stack = self
            .builder(&system, &log_dir, &input_urls)
            .start()
            .await
            .map_err(|source| BenchError::Stack {
                system: name,
                source,
            })?;
        self.observer.event(Event::StackReady {
            system: name,
            nats_url: &jetinfer_client::redact_url(stack.nats_url()),
            redis_url: &jetinfer_client::redact_url(stack.redis_url()),
            running: matches!(system, System::External),
        });
        let clients = self.connect(&system, &stack, &input_urls).await?;
        // The stack keeps the CPUs it started with; the generator moves to its own.
        if let Some(cpus) = super::cpu::pin_load_generator_from_env().map_err(BenchError::Pin)? {
            eprintln!("load generator pinned to CPUs {cpus:?}");
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let Consumer {
            prefix,
            process: extra,
            threads,
        } = self
            .start_consumer(&system, &stack, &clients, &log_dir, &stop)
            .await?;
        let cpu = watch_cpu(&mut stack, extra.as_ref(), threads, &input_stores);
        let bar = self
            .observer
            .progress(name, (self.opts.duration_s * 10.0) as u64);
        let started = Instant::now();
        let spec = self.spec(prefix, name);
        let result = run::run(&clients.producers, &clients.notices, spec, &bar).await;
        bar.finish_and_clear();
        let completed = result.rec.ok + result.rec.errors.values().sum::<u64>();
        let cpu = cpu.finish(completed);
        self.observer.event(Event::Measured {
            system: name,
            secs: started.elapsed().as_secs_f64(),
        });
        let report = RunReport::new(
            name,
            self.load.clone(),
            self.opts.duration_s,
            self.opts.warmup_s,
            &result,
            cpu,
        );
        stop.cancel();
        if let Some(mut p) = extra {
            p.kill();
        }
        if report.missing > 0 || report.ok == 0 {
            let _ = stack.check_alive("the benchmark ran");
            self.observer.event(Event::Missing {
                system: name,
                missing: report.missing,
                log_dir: &log_dir,
            });
        }
        if !matches!(system, System::External) {
            stack.stop();
        }
        Ok(report)
    }

    /// `--input-stores` extra redis-servers for jetinfer's inputs sent by reference (none
    /// for the bare loop and the Python baseline, which read only inline jobs).
    fn start_input_stores(
        &self,
        system: &System,
    ) -> Result<Vec<RedisServer>, crate::local::LocalError> {
        match system {
            System::Jetinfer => (0..self.opts.input_stores)
                .map(|_| RedisServer::start())
                .collect(),
            System::External | System::Bare(_) | System::Python(_) => Ok(Vec::new()),
        }
    }

    /// The stack `system` runs on; workers get the extra input stores' URLs.
    fn builder(
        &self,
        system: &System,
        log_dir: &Path,
        input_urls: &[String],
    ) -> crate::local::LocalStackBuilder {
        let opts = self.opts;
        let builder = LocalStack::builder()
            .log_dir(log_dir)
            .env("JETINFER_KEY_PREFIX", &opts.key_prefix)
            .timeout(opts.startup_timeout);
        let given = |args: &[String]| {
            args.iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        match (system, &opts.running_stack) {
            (System::External, Some(running)) => builder
                .nats_url(&running.nats_url)
                .redis_url(&running.redis_url)
                .workers(0)
                .dispatcher(false),
            (System::Jetinfer | System::External, _) => builder
                .workers(opts.workers)
                .models(self.models)
                .dispatcher_args(["--storage".to_string(), opts.storage.as_str().into()])
                .dispatcher_args(["--partitions".to_string(), opts.partitions.to_string()])
                .dispatcher_args(given(&opts.dispatcher_args))
                .worker_args(given(&opts.worker_args))
                .worker_args(
                    input_urls
                        .iter()
                        .flat_map(|url| ["--inputs-redis-url".to_string(), url.clone()]),
                ),
            (System::Bare(_) | System::Python(_), _) => builder.workers(0).dispatcher(false),
        }
    }

    /// Connects one producer per priority (see [`run::run`]) and the notice listener.
    /// jetinfer gets the client's default wire (large inputs by reference); the bare loop
    /// and the Python baseline read only inline jobs, as version 1 of the wire defined.
    async fn connect(
        &self,
        system: &System,
        stack: &LocalStack,
        input_urls: &[String],
    ) -> Result<Clients, BenchError> {
        let store = self.store_config(stack);
        let inline_limit = match (system, self.opts.inline_limit) {
            (System::Bare(_) | System::Python(_), _) => usize::MAX,
            (_, Some(limit)) => limit,
            (_, None) => jetinfer_schemas::inputs_ref::DEFAULT_INLINE_LIMIT,
        };
        let mut producers = Vec::with_capacity(3);
        for _ in Priority::ALL {
            let client = connect(stack.nats_url(), &store).await?;
            let inputs =
                InputStores::new(client.store().clone(), &store, input_urls).map_err(|e| {
                    BenchError::Connect {
                        nats_url: stack.nats_url().to_string(),
                        redis_url: store.url.clone(),
                        source: e.into(),
                    }
                })?;
            producers.push(
                client
                    .with_input_stores(inputs)
                    .with_inline_limit(inline_limit),
            );
        }
        let producers: [Client; 3] = producers
            .try_into()
            .unwrap_or_else(|_| unreachable!("one producer per priority"));
        let notices =
            async_nats::connect(stack.nats_url())
                .await
                .map_err(|e| BenchError::Nats {
                    what: "second NATS connection",
                    source: e.into(),
                })?;
        Ok(Clients { producers, notices })
    }

    /// Starts what consumes the jobs when it is not the dispatcher: the bare loop (on a
    /// thread of this process, until `stop`) or the baseline worker.
    async fn start_consumer(
        &self,
        system: &System,
        stack: &LocalStack,
        clients: &Clients,
        log_dir: &Path,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Consumer, BenchError> {
        let client = &clients.producers[0];
        let on_job_subjects = |prefix: &str, process| Consumer {
            prefix: prefix.to_string(),
            process,
            threads: Vec::new(),
        };
        match system {
            System::Bare(hops) => {
                let storage = self.opts.storage.js();
                let url = stack.nats_url().to_string();
                let threads = bare::start(
                    url,
                    self.store_config(stack),
                    storage,
                    self.opts.partitions,
                    *hops,
                    stop.clone(),
                )
                .await?;
                Ok(Consumer {
                    prefix: bare::BARE_PREFIX.to_string(),
                    process: None,
                    threads,
                })
            }
            System::Python(cmd) => {
                let js = jetstream::new(client.nats().clone());
                let env = BaselineEnv {
                    nats_url: stack.nats_url(),
                    redis_url: stack.redis_url(),
                    models: self.models,
                    key_prefix: &self.opts.key_prefix,
                };
                let log = log_dir.join("python-worker.log");
                let p = baseline::start(
                    &js,
                    cmd,
                    &env,
                    self.opts.storage.js(),
                    &log,
                    self.opts.startup_timeout,
                )
                .await?;
                Ok(on_job_subjects(JOBS_PREFIX, Some(p)))
            }
            System::Jetinfer | System::External => Ok(on_job_subjects(JOBS_PREFIX, None)),
        }
    }

    /// The run's Redis, with the bench's key prefix; connections checked as the services
    /// check theirs (the bare loop is their reference; no Redis fault happens in a run).
    fn store_config(&self, stack: &LocalStack) -> StoreConfig {
        StoreConfig {
            keys: Keys::new(&self.opts.key_prefix),
            check_busy_connections: false,
            ..StoreConfig::new(stack.redis_url())
        }
    }

    /// The run of `system` (named `name`) publishing on `prefix`.
    fn spec(&self, prefix: String, name: &str) -> RunSpec {
        let opts = self.opts;
        RunSpec {
            subject_prefix: prefix,
            partitions: opts.partitions,
            model: opts.model.clone(),
            pool: self.pool.clone(),
            load: self.load.clone(),
            duration: Duration::from_secs_f64(opts.duration_s),
            warmup: Duration::from_secs_f64(opts.warmup_s),
            drain: Duration::from_secs_f64(opts.drain_s),
            id_prefix: format!("bench{}{}", self.run_id, &name[..2]),
            max_publishing: opts.max_publishing,
        }
    }
}

/// Connects a client; the error names the servers.
async fn connect(nats_url: &str, store: &StoreConfig) -> Result<Client, BenchError> {
    Client::connect(nats_url, store)
        .await
        .map_err(|source| BenchError::Connect {
            nats_url: nats_url.to_string(),
            redis_url: store.url.clone(),
            source,
        })
}

/// What consumes a run's jobs when it is not the dispatcher.
struct Consumer {
    /// The subject prefix to publish on.
    prefix: String,
    /// The baseline worker's process.
    process: Option<Process>,
    /// The bare loop's threads (in this process).
    threads: Vec<u32>,
}

/// The first CPU reading of the run's processes: the serving side, the servers, and each
/// by name. The load generator shares the machine, so its own CPU is read too (the bare
/// loop's thread is in its process, and counted in both).
fn watch_cpu(
    stack: &mut LocalStack,
    extra: Option<&Process>,
    bare_threads: Vec<u32>,
    input_stores: &[RedisServer],
) -> CpuWatch {
    let process = |name: &str, pid| (name.to_string(), Tracked::Process(pid));
    let mut named: Vec<(String, Tracked)> = stack
        .workers()
        .iter()
        .map(|w| process(w.name(), w.pid()))
        .collect();
    if let Some(d) = stack.dispatcher() {
        named.push(process("dispatcher", d.pid()));
    }
    if let Some(p) = extra {
        named.push(process("python-worker", p.pid()));
    }
    if !bare_threads.is_empty() {
        named.push(("bare-loop threads".into(), Tracked::Threads(bare_threads)));
    }
    let service: Vec<Tracked> = named.iter().map(|(_, t)| t.clone()).collect();
    let mut servers = Vec::new();
    let mut server = |name: String, pid| {
        servers.push(Tracked::Process(pid));
        named.push((name, Tracked::Process(pid)));
    };
    if let Some(n) = stack.nats_server() {
        server("nats-server".into(), n.pid());
    }
    if let Some(r) = stack.redis_server() {
        server("redis-server".into(), r.pid());
    }
    for (i, r) in input_stores.iter().enumerate() {
        server(format!("redis-inputs-{}", i + 1), r.pid());
    }
    named.push(process("jetinfer-bench", std::process::id()));
    CpuWatch::start(service, servers, named)
}

//! The jetinfer dispatcher: moves jobs from the JetStream priority subjects to workers.
//!
//! Flow: [`intake`] (one task per priority) pulls only what its in-flight cap allows,
//! answers undecodable or invalid jobs itself ([`answer`]) — and, when the model registry
//! declares models, jobs for models or versions it does not declare ([`registry`]) —, routes
//! jobs that name no version by their model's traffic weights ([`routing`]) and hands the
//! rest to the [`scheduler`] actor, which owns the ready [`queue`]s (P0 > P1 > P2 with
//! aging) and the [`workers`] registry (from heartbeats). The scheduler sends bundles of one
//! model's jobs to a worker ([`dispatch`]); their JetStream messages stay un-acked, with
//! in-progress acks, until the worker replies that the results are stored in Redis and
//! Redis shows them ([`stored`]). Beside them, with `--metrics-addr`, [`lag`] exports the
//! autoscaling signals (queue lag, oldest-job age, arrival rate, per-model saturation) from
//! JetStream and the workers' heartbeats.
//!
//! With more than one dispatcher, only the holder of the [`lease`] (a NATS KV key) sets up
//! the streams and consumers and schedules; the others wait as standbys.
//!
//! Modules import downhill only: types ([`job`], [`events`], [`telemetry`]),
//! pure state ([`queue`], [`workers`], [`sizing`]), then the actors and their helpers,
//! then this file, which wires them together.
//!
//! This crate does not link libtorch.

pub mod config;
pub mod lease;
pub mod stream;

mod answer;
mod coalesce;
mod conflicts;
mod dispatch;
mod effects;
mod events;
mod health;
mod http;
mod intake;
mod job;
mod lag;
mod queue;
mod registry;
mod routing;
mod saturation;
mod scheduler;
mod sizing;
mod stored;
pub mod telemetry;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use jetinfer_schemas::names::{parse_heartbeat_subject, HEARTBEAT_SUBJECT};
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{Keys, Priority};
use jetinfer_store::{ResultStore, StoreConfig, StoreError};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ConfigError};
pub use http::HttpError;
pub use lease::LeaseError;
pub use stream::StreamError;

/// How long in-flight bundles may take to finish after shutdown is requested.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("cannot connect to NATS")]
    Nats(#[from] jetinfer_connect::ConnectError),
    #[error("cannot set up the result store")]
    Store(#[from] StoreError),
    #[error("cannot start the metrics and health endpoint")]
    Http(#[from] HttpError),
    #[error("cannot set up JetStream")]
    Stream(#[from] StreamError),
    /// The lease bucket cannot be opened, or the active dispatcher lost the lease: it
    /// stopped scheduling and exits so a supervisor restarts it as a standby.
    #[error("dispatcher lease")]
    Lease(#[from] LeaseError),
    #[error("cannot subscribe to {subject}")]
    Subscribe {
        subject: &'static str,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// Runs a dispatcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.check()?;
    let config = Arc::new(config);
    let name = config
        .id
        .clone()
        .unwrap_or_else(|| format!("dispatcher-{:08x}", rand::random::<u32>()));
    tracing::info!(id = %name, config = %config.redacted(), "starting dispatcher");
    let answer = connect(&config, &name).await?;

    let (stream_ready_tx, stream_ready) = watch::channel(false);
    let (workers_view_tx, workers_view) = watch::channel(Vec::new());
    let lag_workers = workers_view.clone();
    // Filled once the registry follower runs (it needs the streams' task set, below).
    let registry_cell = Arc::new(std::sync::OnceLock::new());
    let (role_tx, role) = watch::channel(lease::Role::Standby { active: None });
    let sources = http::Sources {
        nats: answer.nats.clone(),
        store: answer.store.clone(),
        stream_ready,
        workers: workers_view,
        role,
        registry: registry_cell.clone(),
    };
    // Serves until exit, so /readyz can be asked during the drain too.
    http::start(&config, &name, sources, CancellationToken::new()).await?;
    // The lease comes before any stream, consumer or job is touched. `work` stops every
    // task on shutdown or at once when the lease is lost; `release` ends the renewals
    // after the drain.
    let work = shutdown.child_token();
    let release = CancellationToken::new();
    let keeper = if !config.lease {
        None
    } else {
        let (kv, ttl) = lease::open(&answer.js, config.lease_ttl(), config.replicas).await?;
        let Some(held) = lease::acquire(kv, &name, ttl, &role_tx, &shutdown).await else {
            tracing::info!("dispatcher stopped while standby");
            return Ok(());
        };
        Some(tokio::spawn(held.keep(work.clone(), release.clone())))
    };
    role_tx.send_replace(lease::Role::Active);
    telemetry::lease_active(true);
    let requested = shutdown;
    let shutdown = work;
    let tasks = TaskTracker::new();
    let (health_tx, store_health) = watch::channel(true);
    tasks.spawn(health::watch_store(
        answer.store.clone(),
        health_tx,
        shutdown.clone(),
    ));
    let (tx, rx) = mpsc::channel(config.in_flight.iter().sum::<usize>() + 64);
    let heartbeats = answer
        .nats
        .subscribe(HEARTBEAT_SUBJECT)
        .await
        .map_err(|source| Error::Subscribe {
            subject: HEARTBEAT_SUBJECT,
            source,
        })?;
    tasks.spawn(forward_heartbeats(heartbeats, tx.clone(), shutdown.clone()));
    let registry = registry::start(answer.js.clone(), &tasks, shutdown.clone()).await;
    let _ = registry_cell.set(registry.clone());
    let intakes = Intakes {
        config: &config,
        answer: &answer,
        scheduler: &tx,
        store_health: &store_health,
        registry: &registry,
    };
    // During a NATS cluster's election the stream and consumer requests time out for a
    // while: retry them rather than exit holding the lease (a successor would wait a TTL).
    let streams = match intakes.ensure_retrying(&shutdown).await {
        Ok(streams) => streams,
        Err(e) => {
            release.cancel();
            if let Some(k) = keeper {
                let _ = k.await;
            }
            return Err(e);
        }
    };
    intakes.start(streams, &tasks, &shutdown).await?;
    // Autoscaling signals, only where /metrics serves them.
    if config.ops.metrics_addr.is_some() {
        let settings = lag::Settings::new(&config);
        tasks.spawn(lag::run(
            answer.js.clone(),
            lag_workers,
            settings,
            shutdown.clone(),
        ));
    }
    stream_ready_tx.send_replace(true);

    // A bundle is one NATS message: it must fit the server's max_payload.
    let max_bundle_bytes = answer
        .nats
        .server_info()
        .max_payload
        .saturating_sub(sizing::BUNDLE_ENVELOPE_BYTES);
    let nats = answer.nats.clone();
    let effects = effects::Live {
        config: config.clone(),
        stored: stored::StoredCheck::start(answer.store.clone(), config.in_flight_total()),
        answer,
        scheduler: tx,
        tasks: tasks.clone(),
    };
    let scheduler = scheduler::Scheduler::new(
        &config,
        max_bundle_bytes,
        effects,
        store_health,
        workers_view_tx,
    );
    tracing::info!("dispatcher ready");
    scheduler.run(rx, shutdown.clone()).await;
    if !requested.is_cancelled() {
        // Only the lease cancels `work` without a shutdown request: another dispatcher may
        // be active now, so nothing more is acked here; held jobs go back to JetStream
        // when their AckWait runs out and the active one gets them.
        role_tx.send_replace(lease::Role::Lost);
        telemetry::lease_active(false);
        let lost = match keeper {
            Some(k) => k.await.ok().and_then(Result::err),
            None => None,
        };
        let lost = lost.unwrap_or(LeaseError::Lost {
            why: "renewals stopped".to_string(),
        });
        tracing::error!(error = %lost, "stopping: another dispatcher may be active");
        return Err(lost.into());
    }
    drain(tasks, &nats).await;
    // After the drain, so that a standby starts only once our bundles are answered.
    release.cancel();
    if let Some(k) = keeper {
        if let Ok(Err(e)) = k.await {
            tracing::warn!(error = %e, "dispatcher lease lost during the drain");
        }
    }
    Ok(())
}

/// What every priority's intake shares.
struct Intakes<'a> {
    config: &'a Arc<Config>,
    answer: &'a answer::Answerer,
    scheduler: &'a mpsc::Sender<events::Command>,
    store_health: &'a watch::Receiver<bool>,
    registry: &'a registry::Snapshot,
}

/// The JetStream objects the intakes run on, once set up.
struct Streams {
    /// Per priority, the consumer of each of its partitions.
    consumers: Vec<(Priority, Vec<PullConsumer>)>,
    /// Partitions beyond `--partitions` (number, stream), empty, to retire once the
    /// intakes run.
    extra: Vec<(u16, async_nats::jetstream::stream::Stream)>,
}

/// How long the stream and consumer setup is retried before the dispatcher gives up.
const SETUP_PATIENCE: Duration = Duration::from_secs(60);

impl Intakes<'_> {
    /// [`Intakes::ensure`], retried with back-off for up to [`SETUP_PATIENCE`] while
    /// JetStream does not answer, until `shutdown` (the lease lost, or a stop). A refusal
    /// that retrying cannot change (jobs left in the old layout or a dropped partition) is
    /// returned at once.
    async fn ensure_retrying(&self, shutdown: &CancellationToken) -> Result<Streams, Error> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            let e = match self.ensure().await {
                Ok(streams) => return Ok(streams),
                Err(e) => e,
            };
            let permanent = matches!(
                &e,
                Error::Stream(
                    stream::StreamError::LegacyNotEmpty { .. }
                        | stream::StreamError::PartitionNotEmpty { .. }
                )
            );
            if permanent || started.elapsed() + pause > SETUP_PATIENCE {
                return Err(e);
            }
            tracing::warn!(error = %e, retry_in = ?pause, "cannot set up the streams yet; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return Err(e),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(4));
        }
    }

    /// Creates or updates every stream and consumer the dispatcher owns: the old layout
    /// retired, the dead-letter stream, each priority's partition streams and consumers.
    /// Idempotent, so a failed attempt can simply be made again.
    async fn ensure(&self) -> Result<Streams, Error> {
        let js = &self.answer.js;
        stream::retire_legacy_stream(js).await?;
        stream::ensure_dlq_stream(js, self.config).await?;
        let mut extra = Vec::new();
        for p in Priority::ALL {
            extra.extend(stream::extra_partitions(js, self.config, p).await?);
        }
        let mut consumers = Vec::new();
        for p in Priority::ALL {
            let mut partitions = Vec::new();
            for k in 0..self.config.partitions {
                let stream = stream::ensure_stream(js, self.config, p, k).await?;
                partitions.push(stream::ensure_consumer(&stream, self.config, p, k).await?);
            }
            consumers.push((p, partitions));
        }
        Ok(Streams { consumers, extra })
    }

    /// Starts every partition's intakes on `tasks`, then retires the extra partitions. A
    /// priority's partitions share its in-flight cap: the cap bounds what the dispatcher
    /// holds of that priority, however its jobs were spread.
    async fn start(
        &self,
        streams: Streams,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let js = &self.answer.js;
        for (p, consumers) in streams.consumers {
            let permits = Arc::new(Semaphore::new(self.config.in_flight_cap(p)));
            for consumer in consumers {
                for _ in 0..self.config.intake_tasks {
                    let intake = intake::Intake {
                        priority: p,
                        consumer: consumer.clone(),
                        permits: permits.clone(),
                        config: self.config.clone(),
                        answer: self.answer.clone(),
                        scheduler: self.scheduler.clone(),
                        store_health: self.store_health.clone(),
                        registry: self.registry.clone(),
                    };
                    tasks.spawn(intake.run(shutdown.child_token()));
                }
            }
        }
        // After partition 0 announces the new count.
        for extra in streams.extra {
            stream::retire_partition(js, self.config, extra).await?;
        }
        Ok(())
    }
}

/// Connects to NATS and the result store: what answering jobs needs.
async fn connect(config: &Config, name: &str) -> Result<answer::Answerer, Error> {
    let nats = config
        .connect
        .nats()
        .name(name)
        .retry_on_initial_connect()
        .connect()
        .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let mut store_config = StoreConfig::new(config.connect.redis_url());
    // Every store error on the job path is handled by trying again later: skip the
    // pool's round trip per checkout (see `StoreConfig::check_busy_connections`).
    store_config.check_busy_connections = false;
    store_config.tls = jetinfer_store::RedisTls {
        ca: config.connect.redis_tls_ca.clone(),
        cert: config.connect.redis_tls_cert.clone(),
        key: config.connect.redis_tls_key.clone(),
    };
    store_config.keys = Keys::new(&config.key_prefix);
    store_config.result_ttl = Duration::from_secs(config.result_ttl_s);
    store_config.wait_replicas = config.connect.redis_wait_replicas;
    store_config.wait_timeout = config.connect.redis_wait_timeout();
    // A Redis that refuses us (TLS, password) stops the process at start, naming why;
    // one that is not up yet is waited for, as before.
    let store = ResultStore::connect(&store_config).await?;
    Ok(answer::Answerer {
        store,
        nats,
        js,
        name: name.to_string(),
    })
}

/// Feeds worker heartbeats to the scheduler's registry until `shutdown`.
async fn forward_heartbeats(
    mut heartbeats: async_nats::Subscriber,
    scheduler: mpsc::Sender<events::Command>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! { biased; _ = shutdown.cancelled() => break, m = heartbeats.next() => m };
        let Some(msg) = msg else { break };
        match rmp_serde::from_slice::<Heartbeat>(&msg.payload) {
            // Subject permissions let a worker publish on its own subject only: a payload
            // that names another worker is a forgery (or a bug) and is dropped.
            Ok(hb) if parse_heartbeat_subject(msg.subject.as_str()) != Some(&hb.worker) => {
                tracing::warn!(subject = %msg.subject, worker = %hb.worker, "heartbeat names another worker than its subject; ignored");
            }
            Ok(hb) => {
                if scheduler
                    .send(events::Command::Heartbeat(hb))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable heartbeat"),
        }
    }
}

/// Waits for in-flight bundles and answers to finish, up to [`DRAIN_DEADLINE`].
async fn drain(tasks: TaskTracker, nats: &async_nats::Client) {
    tasks.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight bundles did not finish in time; JetStream will redeliver them");
    }
    nats.flush().await.ok();
    tracing::info!("dispatcher stopped");
}

//! The jetinfer dispatcher: moves jobs from the JetStream priority subjects to workers.
//!
//! Flow: [`intake`] (one task per priority) pulls only what its in-flight cap allows,
//! answers undecodable or invalid jobs itself ([`answer`]), and hands the rest to the
//! [`scheduler`] actor, which owns the ready [`queue`]s (P0 > P1 > P2 with aging) and the
//! [`workers`] registry (from heartbeats). The scheduler sends bundles of one model's jobs
//! to a worker ([`dispatch`]); their JetStream messages stay un-acked, with in-progress
//! acks, until the worker replies that the results are stored in Redis.
//!
//! This crate does not link libtorch.

pub mod config;
pub mod stream;

mod answer;
mod dispatch;
mod health;
mod http;
mod intake;
mod job;
mod queue;
mod scheduler;
pub mod telemetry;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetinfer_schemas::names::HEARTBEAT_SUBJECT;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{Keys, Priority};
use jetinfer_store::{ResultStore, StoreConfig};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// How long in-flight bundles may take to finish after shutdown is requested.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs a dispatcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.check()?;
    let config = Arc::new(config);
    let name = config
        .id
        .clone()
        .unwrap_or_else(|| format!("dispatcher-{:08x}", rand::random::<u32>()));
    tracing::info!(id = %name, config = %config.redacted(), "starting dispatcher");

    let nats = config
        .connect
        .nats()
        .name(&name)
        .retry_on_initial_connect()
        .connect()
        .await?;
    let js = async_nats::jetstream::new(nats.clone());
    let mut store_config = StoreConfig::new(config.connect.redis_url());
    store_config.keys = Keys::new(&config.key_prefix);
    store_config.result_ttl = Duration::from_secs(config.result_ttl_s);
    let store = ResultStore::new(&store_config)?;
    let answer = answer::Answerer {
        store: store.clone(),
        nats: nats.clone(),
        js: js.clone(),
        name: name.clone(),
    };

    // Serves until exit, so /readyz can be asked during the drain too.
    let ops = http::start(
        &config,
        &name,
        nats.clone(),
        store.clone(),
        CancellationToken::new(),
    )
    .await?;
    let stream = stream::ensure_stream(&js, &config).await?;
    stream::ensure_dlq_stream(&js, &config).await?;
    let tasks = TaskTracker::new();
    let (health_tx, store_health) = tokio::sync::watch::channel(true);
    tasks.spawn(health::watch_store(store, health_tx, shutdown.clone()));
    let (tx, rx) = mpsc::channel(config.in_flight.iter().sum::<usize>() + 64);

    // Heartbeats feed the registry.
    let mut heartbeats = nats.subscribe(HEARTBEAT_SUBJECT).await?;
    let hb_tx = tx.clone();
    let ops_ready = ops.clone();
    let hb_shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            let msg = tokio::select! { biased; _ = hb_shutdown.cancelled() => break, m = heartbeats.next() => m };
            let Some(msg) = msg else { break };
            match rmp_serde::from_slice::<Heartbeat>(&msg.payload) {
                Ok(hb) => {
                    ops.heartbeat(&hb);
                    if hb_tx.send(scheduler::Command::Heartbeat(hb)).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable heartbeat"),
            }
        }
    });

    let intake_stop = shutdown.child_token();
    for p in Priority::ALL {
        let consumer = stream::ensure_consumer(&stream, &config, p).await?;
        let intake = intake::Intake {
            priority: p,
            consumer,
            permits: Arc::new(Semaphore::new(config.in_flight_cap(p))),
            config: config.clone(),
            answer: answer.clone(),
            scheduler: tx.clone(),
            store_health: store_health.clone(),
        };
        tasks.spawn(intake.run(intake_stop.clone()));
    }

    ops_ready.stream_ready();
    // A bundle is one NATS message: it must fit the server's max_payload.
    let max_bundle_bytes = answer
        .nats
        .server_info()
        .max_payload
        .saturating_sub(dispatch::BUNDLE_ENVELOPE_BYTES);
    let scheduler = scheduler::Scheduler {
        queues: queue::ReadyQueues::new(Duration::from_millis(config.aging_ms)),
        workers: workers::Workers::new(
            Duration::from_millis(config.heartbeat_timeout_ms),
            Duration::from_millis(config.dispatch_timeout_ms),
        ),
        config: config.clone(),
        answer,
        tx,
        tasks: tasks.clone(),
        started: Instant::now(),
        store_health,
        max_bundle_bytes,
    };
    tracing::info!(
        stream = jetinfer_schemas::names::JOBS_STREAM,
        "dispatcher ready"
    );
    scheduler.run(rx, shutdown.clone()).await;

    tasks.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight bundles did not finish in time; JetStream will redeliver them");
    }
    nats.flush().await.ok();
    tracing::info!("dispatcher stopped");
    Ok(())
}

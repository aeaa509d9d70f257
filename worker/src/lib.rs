//! The jetinfer worker: runs TorchScript models through libtorch (tch) for jobs that
//! dispatchers send it.
//!
//! Layout, in the order a job meets it:
//! - [`service`]: a run request from a dispatcher → decode, check against the model's
//!   input spec ([`spec`]), answer invalid/expired/unknown/cached jobs directly, queue the
//!   rest; reply once every result is stored.
//! - [`batcher`]: one task per model forms dynamic batches (when one goes: [`gather`]).
//! - [`executor`]: one OS thread per device owns the modules and runs batches (no-grad).
//! - [`results`]: one Redis pipeline per batch (`SET NX`, cache), completion notices.
//! - [`heartbeat`]: announces models and free slots every second.
//!
//! [`config`] holds the flags and the models TOML; [`roster`] is the snapshot of what the
//! worker serves, published here and read by the service, heartbeat and health endpoint.
//! With `--registry` the models come from the model registry instead, and [`lifecycle`]
//! loads and unloads versions while the worker serves ([`placement`]: which are ours).

pub mod ceiling;
pub mod config;
mod error;
pub mod faults;
pub mod telemetry;

mod batch_time;
mod batcher;
mod buckets;
mod device_load;
mod exec_batch;
mod executor;
mod forward;
mod gather;
mod gpu;
mod heartbeat;
mod http;
mod job;
mod lifecycle;
mod loading;
mod meters;
mod pad;
mod placement;
mod results;
mod roster;
mod service;
pub mod sim;
mod spec;
mod staging;
mod startup;
mod torch_error;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_schemas::names::worker_run_subject;
use jetinfer_schemas::Keys;
use jetinfer_store::{InputStores, ResultStore, StoreConfig};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ModelConfig, ModelsFile, ModelsFileError};
pub use error::WorkerError;
pub use http::HttpError;
pub use loading::{DeviceError, LoadError};

use roster::{Roster, RosterTx};
use service::Service;

/// Whether libtorch in this process can use CUDA (false when libtorch_cuda was dropped at
/// link time, or there is no GPU).
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Runs a worker until `shutdown` is cancelled, then drains: stops taking work, finishes
/// what it holds (within `--drain-ms`), and exits.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let id = config
        .id
        .clone()
        .unwrap_or_else(|| format!("worker-{:08x}", rand::random::<u32>()));
    tracing::info!(id = %id, cuda = cuda_available(), cuda_devices = tch::Cuda::device_count(), config = ?config, "starting worker");
    // A bad models file stops the worker before it connects anywhere.
    let file = match (&config.models, config.registry) {
        (Some(path), false) => Some(ModelsFile::load(path)?),
        (Some(path), true) => {
            tracing::warn!(models = %path.display(), "--models is ignored with --registry: the models come from the registry (seed it with `jetinfer models seed --from`)");
            None
        }
        (None, _) => None,
    };
    let (nats, store, inputs) = connect(&config, &id).await?;
    let (roster_tx, roster) = watch::channel(Roster::default());
    // Up before the models load (so /healthz answers during warm-up), and until exit (so
    // /readyz reports the drain).
    http::start(
        &config,
        &id,
        nats.clone(),
        store.clone(),
        roster.clone(),
        CancellationToken::new(),
    )
    .await?;
    let shared = shared(&config, &id, &nats, &store, &inputs)?;
    let watched: lifecycle::Watched = Default::default();
    let slots = match file {
        Some(file) => {
            let started = startup::start_models(file.models, config.slots, &shared).await;
            if started.models.is_empty() {
                return Err(WorkerError::NoModels);
            }
            *watched.lock().expect("fresh") = started.device_states;
            roster_tx.send_replace(Roster {
                models: started.models,
                devices: started.devices,
                slots: started.slots,
                accepting: true,
                ..Default::default()
            });
            started.slots
        }
        None => {
            // Models come and go: no largest batch to size the slots by.
            let slots = config.slots.unwrap_or(REGISTRY_SLOTS).max(1);
            roster_tx.send_replace(Roster {
                devices: config.devices.clone(),
                slots,
                accepting: true,
                registry: true,
                ..Default::default()
            });
            let follower = lifecycle::Follower {
                js: async_nats::jetstream::new(nats.clone()),
                worker: id.clone(),
                devices: config.devices.clone(),
                slots,
                shared: shared.clone(),
                roster: roster_tx.clone(),
                watched: watched.clone(),
            };
            tokio::spawn(follower.run(shutdown.clone()));
            slots
        }
    };
    telemetry::describe(slots);
    let free = Arc::new(Semaphore::new(slots as usize));
    let service = Arc::new(Service {
        roster: roster.clone(),
        slots: free.clone(),
        writer: shared.writer,
        store,
        inputs,
        limits: config.job_limits.limits(),
    });

    let mut requests = nats.subscribe(worker_run_subject(&id)).await?;
    let heartbeat_stop = CancellationToken::new();
    let announcer = heartbeat::Announcer {
        nats: nats.clone(),
        worker: id.clone(),
        roster,
        free,
        watched: watched.clone(),
    };
    let heartbeat = tokio::spawn(announcer.run(
        Duration::from_millis(config.heartbeat_ms),
        heartbeat_stop.clone(),
    ));
    tokio::spawn(watchdog(
        watched,
        Duration::from_millis(config.forward_timeout_ms),
    ));
    tracing::info!(id = %id, slots, "worker ready");

    let fatal = shared.fatal;
    let in_flight = serve(&mut requests, &service, &nats, &shutdown, &fatal).await;
    stop_accepting(&roster_tx, heartbeat_stop, heartbeat).await;
    drain(requests, &service, &nats, in_flight, &fatal, &config).await;
    if fatal.is_cancelled() {
        // The supervisor restarts us with a fresh CUDA context.
        return Err(WorkerError::DeviceLost { id });
    }
    tracing::info!(id = %id, "worker stopped");
    Ok(())
}

/// Connects to NATS (retrying until it answers) and sets up the result store and the input
/// stores.
async fn connect(
    config: &Config,
    id: &str,
) -> Result<(async_nats::Client, ResultStore, InputStores), WorkerError> {
    let nats = config
        .connect
        .nats()
        .name(id)
        .retry_on_initial_connect()
        .connect()
        .await?;
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
    store_config.cache_ttl = Duration::from_secs(config.cache_ttl_s);
    store_config.wait_replicas = config.connect.redis_wait_replicas;
    store_config.wait_timeout = config.connect.redis_wait_timeout();
    // A Redis that refuses us (TLS, password) stops the process at start, naming why;
    // one that is not up yet is waited for, as before.
    let store = ResultStore::connect(&store_config).await?;
    let inputs = InputStores::connect(
        store.clone(),
        &store_config,
        &config.connect.inputs_redis_urls,
    )
    .await?;
    Ok((nats, store, inputs))
}

/// The result writer, the injected faults and the fatal-error token every batcher shares.
fn shared(
    config: &Config,
    id: &str,
    nats: &async_nats::Client,
    store: &ResultStore,
    inputs: &InputStores,
) -> Result<startup::Shared, WorkerError> {
    let faults = faults::Faults::parse(config.inject_faults.as_deref().unwrap_or(""))?;
    if !faults.is_empty() {
        tracing::warn!(
            ?faults,
            "fault injection is ON: this worker fails on purpose"
        );
    }
    let writer = results::Writer {
        store: store.clone(),
        inputs: inputs.clone(),
        nats: nats.clone(),
        worker_id: id.to_string(),
        record_executions: config.record_executions,
        abort_after_writes: faults.exit_after_store,
        writes: Default::default(),
    };
    Ok(startup::Shared {
        writer,
        faults: Arc::new(faults),
        // Cancelled on a sticky device error: stop taking work and exit non-zero.
        fatal: CancellationToken::new(),
        batchers: TaskTracker::new(),
    })
}

/// Answers run requests until `shutdown` or a sticky device error; returns the requests
/// still being handled.
async fn serve(
    requests: &mut async_nats::Subscriber,
    service: &Arc<Service>,
    nats: &async_nats::Client,
    shutdown: &CancellationToken,
    fatal: &CancellationToken,
) -> TaskTracker {
    let in_flight = TaskTracker::new();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = fatal.cancelled() => break,
            m = requests.next() => m,
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply else { continue };
        let (service, nats) = (service.clone(), nats.clone());
        in_flight.spawn(async move { service.handle(&nats, reply, msg.payload).await });
    }
    in_flight
}

/// Announces "not accepting": the service sends new jobs back, and the last heartbeat
/// tells the dispatchers.
async fn stop_accepting(
    roster: &RosterTx,
    heartbeat_stop: CancellationToken,
    heartbeat: tokio::task::JoinHandle<()>,
) {
    roster.send_modify(|r| r.accepting = false);
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
}

/// Stops listening and finishes what the worker holds, within `--drain-ms`.
async fn drain(
    mut requests: async_nats::Subscriber,
    service: &Service,
    nats: &async_nats::Client,
    in_flight: TaskTracker,
    fatal: &CancellationToken,
    config: &Config,
) {
    // Requests already on their way are answered (all `retry`: we no longer accept), not
    // dropped: a dropped request would cost its jobs a timeout and a counted failure.
    if requests.drain().await.is_ok() {
        let leftovers = async {
            while let Some(msg) = requests.next().await {
                if let Some(reply) = msg.reply {
                    service.handle(nats, reply, msg.payload).await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), leftovers).await;
    }
    in_flight.close();
    // After a sticky device error nothing more can run here: hand back quickly and exit, so
    // the supervisor's replacement takes over, rather than idling through a full drain.
    let deadline = if fatal.is_cancelled() {
        FATAL_DRAIN
    } else {
        Duration::from_millis(config.drain_ms)
    };
    if tokio::time::timeout(deadline, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; unfinished jobs will be dispatched again");
    }
    let _ = nats.flush().await;
}

/// A forward that runs longer than `limit` is hung (a CUDA call cannot be cancelled): the
/// only way out is to exit, so the dispatcher re-dispatches the jobs to other workers.
async fn watchdog(devices: lifecycle::Watched, limit: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(limit));
    loop {
        tick.tick().await;
        let now = jetinfer_schemas::now_ms();
        let devices = devices.lock().expect("watchdog list poisoned").clone();
        for (device, state) in &devices {
            let since = state
                .busy_since_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            if since != 0 && now.saturating_sub(since) > limit.as_millis() as u64 {
                tracing::error!(
                    device,
                    running_ms = now - since,
                    limit_ms = limit.as_millis() as u64,
                    "forward hung; exiting"
                );
                std::process::exit(EXIT_HUNG);
            }
        }
    }
}

/// Slots of a `--registry` worker without `--slots`.
const REGISTRY_SLOTS: u32 = 128;

/// How long a worker with an unusable device waits for its requests to answer.
const FATAL_DRAIN: Duration = Duration::from_secs(2);

/// Exit status of a worker whose forward hung.
pub const EXIT_HUNG: i32 = 3;

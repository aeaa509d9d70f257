//! The dispatcher's `/metrics`, `/healthz` and `/readyz` (on `--metrics-addr`).
//!
//! Ready means: connected to NATS, Redis answers a PING, and the job stream and consumers
//! exist. The body names the live workers and the models and versions they serve (from
//! the heartbeats, which this module also turns into the worker gauges).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jetinfer_schemas::worker::Heartbeat;
use jetinfer_store::ResultStore;
use jetinfer_telemetry::http::{nats_state, serve, Readiness, ReadyCheck};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry;

#[derive(Default)]
struct State {
    stream_ready: bool,
    workers: BTreeMap<String, (Instant, Heartbeat)>,
}

/// What the health endpoints report; cheap to clone.
#[derive(Clone)]
pub(crate) struct Ops {
    state: Arc<Mutex<State>>,
    heartbeat_timeout: Duration,
}

impl Ops {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock loses at most a health snapshot.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream and consumers exist.
    pub fn stream_ready(&self) {
        self.lock().stream_ready = true;
    }

    /// A worker's heartbeat: keep its models for the health body, update the gauges.
    pub fn heartbeat(&self, hb: &Heartbeat) {
        telemetry::worker_seen(&hb.worker, hb.free_slots);
        let mut state = self.lock();
        state
            .workers
            .insert(hb.worker.clone(), (Instant::now(), hb.clone()));
        self.forget_dead(&mut state);
    }

    /// Drops workers silent for longer than the heartbeat timeout; sets the live count.
    fn forget_dead(&self, state: &mut State) {
        let timeout = self.heartbeat_timeout;
        state
            .workers
            .retain(|_, (seen, hb)| seen.elapsed() <= timeout && hb.accepting);
        telemetry::workers_live(state.workers.len());
    }

    fn snapshot(&self) -> (bool, serde_json::Value) {
        let mut state = self.lock();
        self.forget_dead(&mut state);
        let workers: Vec<serde_json::Value> = state
            .workers
            .values()
            .map(|(_, hb)| {
                json!({
                    "id": hb.worker,
                    "free_slots": hb.free_slots,
                    "slots": hb.slots,
                    "devices": hb.devices,
                    "models": hb.models.iter().map(|m| json!({"name": m.name, "version": m.version})).collect::<Vec<_>>(),
                })
            })
            .collect();
        (state.stream_ready, json!(workers))
    }
}

/// Starts the endpoint when `--metrics-addr` is set (installing the metrics recorder
/// first); returns the handle the dispatcher reports to either way.
pub(crate) async fn start(
    config: &Config,
    name: &str,
    nats: async_nats::Client,
    store: ResultStore,
    shutdown: CancellationToken,
) -> anyhow::Result<Ops> {
    let ops = Ops {
        state: Arc::default(),
        heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
    };
    let Some(addr) = config.ops.metrics_addr else {
        return Ok(ops);
    };
    let metrics = jetinfer_telemetry::prometheus::install()?;
    telemetry::describe();
    // Without heartbeats the live-worker gauge would keep its last value.
    let sweeper = ops.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! { _ = stop.cancelled() => break, _ = tick.tick() => { let mut s = sweeper.lock(); sweeper.forget_dead(&mut s); } }
        }
    });
    let name = name.to_string();
    let view = ops.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let (nats, store, name, view) = (nats.clone(), store.clone(), name.clone(), view.clone());
        Box::pin(async move {
            let (nats_ok, nats_word) = nats_state(&nats);
            let (redis_ok, redis_word) = store.health().await;
            let (stream_ok, workers) = view.snapshot();
            Readiness {
                ready: nats_ok && redis_ok && stream_ok,
                body: json!({
                    "service": "jetinfer-dispatcher",
                    "id": name,
                    "version": env!("CARGO_PKG_VERSION"),
                    "nats": nats_word,
                    "redis": redis_word,
                    "stream": if stream_ok { "ready" } else { "not yet created" },
                    "workers": workers,
                }),
            }
        })
    });
    serve(addr, metrics, ready, shutdown).await?;
    Ok(ops)
}

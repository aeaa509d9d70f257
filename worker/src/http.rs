//! The worker's `/metrics`, `/healthz` and `/readyz` (on `--metrics-addr`).
//!
//! The endpoint starts before the models load, so `/healthz` answers during a long
//! warm-up while `/readyz` says 503. Ready means: connected to NATS, Redis answers a PING,
//! every servable model is loaded and warm, and the worker is accepting (not draining).
//! The body lists the models and versions served, with their devices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jetinfer_store::ResultStore;
use jetinfer_telemetry::http::{nats_state, serve, Readiness, ReadyCheck};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Default)]
struct Served {
    models: Vec<serde_json::Value>,
    accepting: Option<Arc<AtomicBool>>,
    slots: u32,
}

/// What the health endpoints report; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Ops {
    served: Arc<Mutex<Served>>,
}

impl Ops {
    /// The models are loaded and warm; `accepting` turns false while draining.
    pub fn models_ready(
        &self,
        models: impl IntoIterator<Item = (String, String, String)>,
        slots: u32,
        accepting: Arc<AtomicBool>,
    ) {
        let mut s = self.served.lock().unwrap_or_else(|e| e.into_inner());
        s.models = models
            .into_iter()
            .map(|(name, version, device)| json!({"name": name, "version": version, "device": device}))
            .collect();
        s.slots = slots;
        s.accepting = Some(accepting);
        crate::telemetry::describe(slots);
    }

    fn snapshot(&self) -> (bool, serde_json::Value, u32) {
        let s = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let accepting = s
            .accepting
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Relaxed));
        (!s.models.is_empty() && accepting, json!(s.models), s.slots)
    }
}

/// Starts the endpoint when `--metrics-addr` is set (installing the metrics recorder
/// first); returns the handle to report to either way.
pub(crate) async fn start(
    config: &Config,
    id: &str,
    nats: async_nats::Client,
    store: ResultStore,
    shutdown: CancellationToken,
) -> anyhow::Result<Ops> {
    let ops = Ops::default();
    let Some(addr) = config.ops.metrics_addr else {
        return Ok(ops);
    };
    let metrics = jetinfer_telemetry::prometheus::install()?;
    let id = id.to_string();
    let view = ops.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let (nats, store, id, view) = (nats.clone(), store.clone(), id.clone(), view.clone());
        Box::pin(async move {
            let (nats_ok, nats_word) = nats_state(&nats);
            let (redis_ok, redis_word) = store.health().await;
            let (serving, models, slots) = view.snapshot();
            Readiness {
                ready: nats_ok && redis_ok && serving,
                body: json!({
                    "service": "jetinfer-worker",
                    "id": id,
                    "version": env!("CARGO_PKG_VERSION"),
                    "nats": nats_word,
                    "redis": redis_word,
                    "models": models,
                    "models_ready": serving,
                    "slots": slots,
                }),
            }
        })
    });
    serve(addr, metrics, ready, shutdown).await?;
    Ok(ops)
}

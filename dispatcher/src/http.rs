//! The dispatcher's `/metrics`, `/healthz` and `/readyz` (on `--metrics-addr`).
//!
//! Ready means: connected to NATS, Redis answers a PING, this dispatcher holds the
//! dispatcher lease (a standby answers 503, `"lease": "standby, active is <id>"`), and the
//! job stream and consumers exist. The body names the live workers and the models and versions they serve, as the
//! scheduler's worker registry publishes them, and per model the versions the model
//! registry declares beside those live workers have loaded (`models`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use jetinfer_store::ResultStore;
use jetinfer_telemetry::http::{nats_state, serve, Readiness, ReadyCheck};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::telemetry;
use crate::workers::WorkersView;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The Prometheus recorder could not be installed (the exporter's own error type).
    #[error("cannot install the metrics recorder")]
    Metrics(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot serve the health endpoint")]
    Serve(#[source] std::io::Error),
}

/// What `/readyz` reads: the dispatcher's state as its owners publish it.
pub(crate) struct Sources {
    pub nats: async_nats::Client,
    pub store: ResultStore,
    /// Set once the job stream and its consumers exist.
    pub stream_ready: watch::Receiver<bool>,
    /// The live workers, from the scheduler's registry.
    pub workers: watch::Receiver<WorkersView>,
    /// Active, standby or lost, from the lease ([`crate::lease`]).
    pub role: watch::Receiver<crate::lease::Role>,
    /// The model registry's declarations, once the follower has started.
    pub registry: Arc<OnceLock<crate::registry::Snapshot>>,
}

/// Starts the endpoint when `--metrics-addr` is set, installing the metrics recorder
/// first; without it, does nothing.
pub(crate) async fn start(
    config: &Config,
    name: &str,
    sources: Sources,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let Some(addr) = config.ops.metrics_addr else {
        return Ok(());
    };
    let metrics =
        jetinfer_telemetry::prometheus::install().map_err(|e| HttpError::Metrics(Box::new(e)))?;
    telemetry::describe();
    let name = name.to_string();
    let sources = Arc::new(sources);
    let ready: ReadyCheck = Arc::new(move || {
        let (sources, name) = (sources.clone(), name.clone());
        Box::pin(async move {
            let (nats_ok, nats_word) = nats_state(&sources.nats);
            let (redis_ok, redis_word) = sources.store.health().await;
            let stream_ok = *sources.stream_ready.borrow();
            let role = sources.role.borrow().clone();
            let active = role == crate::lease::Role::Active;
            Readiness {
                ready: nats_ok && redis_ok && active && stream_ok,
                body: json!({
                    "service": "jetinfer-dispatcher",
                    "id": name,
                    "version": env!("CARGO_PKG_VERSION"),
                    "nats": nats_word,
                    "redis": redis_word,
                    "lease": role.describe(),
                    "stream": if stream_ok { "ready" } else { "not yet created" },
                    "workers": workers_json(&sources.workers.borrow()),
                    "models": models_json(
                        sources.registry.get().map(|r| r.borrow().clone()).as_deref(),
                        &sources.workers.borrow(),
                    ),
                }),
            }
        })
    });
    serve(addr, metrics, ready, shutdown)
        .await
        .map_err(HttpError::Serve)?;
    Ok(())
}

/// Per model, the versions the registry declares and those live workers have loaded:
/// `{"mlp": {"declared": ["1", "2"], "loaded": ["1"]}}`. A model served but not declared
/// (no registry) has `declared: []`; one declared but served by no live worker,
/// `loaded: []` (its jobs wait, see docs/models.md).
fn models_json(routes: Option<&crate::routing::Routes>, view: &WorkersView) -> Value {
    let mut models: BTreeMap<&str, (Vec<&str>, BTreeSet<&str>)> = BTreeMap::new();
    if let Some(routes) = routes {
        for (name, versions) in routes.declared() {
            models.entry(name).or_default().0 = versions.iter().map(String::as_str).collect();
        }
    }
    for hb in view.iter() {
        for m in &hb.models {
            models.entry(&m.name).or_default().1.insert(&m.version);
        }
    }
    models
        .into_iter()
        .map(|(name, (declared, loaded))| {
            (
                name.to_string(),
                json!({"declared": declared, "loaded": loaded.into_iter().collect::<Vec<_>>()}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The live workers as `/readyz` lists them.
fn workers_json(view: &WorkersView) -> Value {
    view.iter()
        .map(|hb| {
            json!({
                "id": hb.worker,
                "free_slots": hb.free_slots,
                "slots": hb.slots,
                "devices": hb.devices,
                "models": hb.models.iter().map(|m| json!({"name": m.name, "version": m.version})).collect::<Vec<_>>(),
            })
        })
        .collect()
}

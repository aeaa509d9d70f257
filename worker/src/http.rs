//! The worker's `/metrics`, `/healthz` and `/readyz` (on `--metrics-addr`).
//!
//! The endpoint starts before the models load, so `/healthz` answers during a long
//! warm-up while `/readyz` says 503. Ready means: connected to NATS, Redis answers a PING,
//! every servable model is loaded and warm, and the worker is accepting (not draining).
//! The body lists the models and versions served, with their devices, from the roster;
//! with `--registry` also `versions`: per model, the versions the registry places here
//! and which are loaded, loading, unloading or failed (with `load_error`).

use std::sync::Arc;

use jetinfer_store::ResultStore;
use jetinfer_telemetry::http::{nats_state, serve, Readiness, ReadyCheck};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::roster::RosterRx;

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot install the Prometheus recorder")]
    Metrics(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot serve the metrics and health endpoint")]
    Serve(#[source] std::io::Error),
}

/// Starts the endpoint when `--metrics-addr` is set (installing the metrics recorder
/// first); its readiness reads `roster`.
pub(crate) async fn start(
    config: &Config,
    id: &str,
    nats: async_nats::Client,
    store: ResultStore,
    roster: RosterRx,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let Some(addr) = config.ops.metrics_addr else {
        return Ok(());
    };
    let metrics =
        jetinfer_telemetry::prometheus::install().map_err(|e| HttpError::Metrics(Box::new(e)))?;
    let id = id.to_string();
    let ready: ReadyCheck = Arc::new(move || {
        let (nats, store, id, roster) = (nats.clone(), store.clone(), id.clone(), roster.clone());
        Box::pin(async move {
            let (nats_ok, nats_word) = nats_state(&nats);
            let (redis_ok, redis_word) = store.health().await;
            let (serving, models, slots, versions) = {
                let r = roster.borrow();
                (r.serving(), r.listed(), r.slots, r.versions())
            };
            let mut body = json!({
                    "service": "jetinfer-worker",
                    "id": id,
                    "version": env!("CARGO_PKG_VERSION"),
                    "nats": nats_word,
                    "redis": redis_word,
                    "models": models,
                    "models_ready": serving,
                    "slots": slots,
            });
            if let Some(versions) = versions {
                body["versions"] = versions;
            }
            Readiness {
                ready: nats_ok && redis_ok && serving,
                body,
            }
        })
    });
    serve(addr, metrics, ready, shutdown)
        .await
        .map_err(HttpError::Serve)?;
    Ok(())
}

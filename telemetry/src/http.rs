//! The operations endpoint of a process: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (it can do its work: connected to NATS and Redis,
//! and for a worker, models loaded and warm).
//!
//! Both health answers carry the same JSON body, built by the process's [`ReadyCheck`]
//! (service, id, what it serves and the state of each dependency); `/readyz` answers 503
//! while not ready, `/healthz` always 200. Each scrape of `/metrics` refreshes the process
//! metrics first ([`Metrics::render`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::prometheus::Metrics;

/// The answer of a readiness check.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub ready: bool,
    /// Shown as the body of `/healthz` and `/readyz`.
    pub body: serde_json::Value,
}

/// Computes the process's readiness on each request.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Readiness> + Send>> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    ready: ReadyCheck,
}

/// Binds `addr`, serves until `shutdown`, and returns the bound address (port 0 picks a
/// free one; it is also logged).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: ReadyCheck,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics and health endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving metrics and health on /metrics, /healthz, /readyz");
    Ok(bound)
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    let r = (s.ready)().await;
    let mut body = r.body;
    body["alive"] = true.into();
    body["ready"] = r.ready.into();
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let r = (s.ready)().await;
    let mut body = r.body;
    body["ready"] = r.ready.into();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Whether a NATS connection is up, as a word for health bodies.
pub fn nats_state(nats: &async_nats::Client) -> (bool, &'static str) {
    match nats.connection_state() {
        async_nats::connection::State::Connected => (true, "connected"),
        async_nats::connection::State::Pending => (false, "connecting"),
        async_nats::connection::State::Disconnected => (false, "disconnected"),
    }
}

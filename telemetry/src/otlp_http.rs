//! The HTTP client of the OTLP/HTTP exporter: hyper, without TLS (an `http://` collector
//! endpoint, as beside a sidecar or in a cluster network).
//!
//! The SDK's batch processor exports from a thread of its own, outside any tokio runtime,
//! while hyper needs one for its sockets and timers. [`RuntimeClient`] therefore runs each
//! request as a task on the runtime [`crate::init`] was called in, and the exporter's
//! thread only waits for that task, which works from any thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// The export timeout when `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` is not set (the
/// specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A hyper client whose requests run on a given tokio runtime.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeClient {
    inner: Arc<HyperClient>,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    /// A client for the current runtime (call it inside one), with the timeout of
    /// [`export_timeout`].
    pub(crate) fn for_current_runtime() -> Result<Self, tokio::runtime::TryCurrentError> {
        Ok(RuntimeClient {
            inner: Arc::new(HyperClient::with_default_connector(export_timeout(), None)),
            runtime: tokio::runtime::Handle::try_current()?,
        })
    }
}

// `HttpClient` is an `async_trait`; this is the signature that macro would write.
impl HttpClient for RuntimeClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let inner = Arc::clone(&self.inner);
        let task = self
            .runtime
            .spawn(async move { inner.send_bytes(request).await });
        Box::pin(async move { task.await? })
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds),
/// else 10 s.
pub(crate) fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .find_map(|v| v.trim().parse::<u64>().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

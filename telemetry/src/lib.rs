//! Process plumbing shared by the jetinfer binaries: logs, traces, metrics, health, the
//! flags for them, and the shutdown signal. Depends on no other jetinfer crate.
//!
//! - [`init`] sets up logging (stderr, `RUST_LOG`, text or JSON) and, only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an
//!   OpenTelemetry tracer exporting over OTLP, gRPC or HTTP/protobuf by
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` ([`otlp`]). Without an endpoint no exporter, no
//!   OpenTelemetry layer and no per-span OpenTelemetry work exist. `OTEL_SERVICE_NAME`
//!   names the service ([`service_name`]) and `OTEL_TRACES_SAMPLER` (/`_ARG`) picks the
//!   sampler (read by the SDK itself).
//! - [`JOB_SPANS`]: the target of the per-job spans, exported at any `RUST_LOG` but
//!   written into log lines only at `debug`: without an exporter and at the default log
//!   level they cost nothing per job.
//! - [`context`]: W3C `traceparent` in and out of NATS headers and run requests, so one job
//!   is one trace across the client, the dispatcher and the worker; spans with explicit
//!   start and end times (queue waits measured from timestamps).
//! - [`prometheus`]: the Prometheus recorder behind the `metrics` macros, with our buckets,
//!   the `jetinfer_build_info` gauge and the process metrics.
//! - [`http`]: `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
//! - [`OpsArgs`] (`args.rs`): the flags for all of that, flattened into each binary's
//!   configuration.
//! - [`signal`]: SIGTERM / Ctrl-C as a cancellation.
//! - [`Allocator`] (`alloc.rs`): the global allocator the service binaries declare.

mod alloc;
mod args;
pub mod context;
pub mod http;
mod lazy_fields;
pub mod otlp;
mod otlp_http;
pub mod prometheus;
mod service;
pub mod signal;

pub use alloc::Allocator;
pub use args::{LogFormat, OpsArgs};
pub use otlp::{otlp_endpoint, OtlpError, OtlpProtocol};
pub use service::service_name;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The name our spans are exported under (the instrumentation scope).
pub const TRACER_NAME: &str = "jetinfer";

/// The `tracing` target of the per-job spans (`dispatcher.job`, `dispatcher.dispatch`,
/// `worker.job`), which are created at `DEBUG`: the OpenTelemetry layer takes them at any
/// `RUST_LOG`, the log lines carry them only when `RUST_LOG` enables this target at `debug`
/// (e.g. `RUST_LOG=info,jetinfer::job=debug`). With neither, their callsites are disabled
/// and a job costs no span bookkeeping: creating, recording and closing three spans per
/// job was about a tenth of the services' CPU for a small model (docs/benchmarks.md).
/// Log lines about one job name its id themselves.
pub const JOB_SPANS: &str = "jetinfer::job";

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered now (off the async threads, like [`Telemetry::shutdown`]).
    pub async fn flush(&self) {
        if let Some(provider) = self.provider.clone() {
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    }

    /// Exports what is still buffered and stops the exporter. Blocking work, so it runs
    /// off the async threads (the gRPC client needs them to make progress); bounded by
    /// [`SHUTDOWN_FLUSH_LIMIT`] so an unreachable collector cannot hold up an exit.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let flush = tokio::task::spawn_blocking(move || {
                let _ = provider.force_flush();
                let _ = provider.shutdown();
            });
            if tokio::time::timeout(SHUTDOWN_FLUSH_LIMIT, flush)
                .await
                .is_err()
            {
                tracing::warn!("trace export did not finish in time; the last spans are lost");
            }
        }
    }
}

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported.
pub const SHUTDOWN_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Sets up logging and, when an OTLP endpoint is configured, trace export; call it once,
/// inside the tokio runtime (the exporters need it). `service` is the default
/// `service.name` (`OTEL_SERVICE_NAME` overrides it; [`service_name`] tells the result);
/// `default_filter` applies when `RUST_LOG` is unset.
pub fn init(service: &str, format: LogFormat, default_filter: &str) -> Telemetry {
    let service = service::resolve(service);
    service::remember(&service);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},opentelemetry=warn")));
    let (provider, error) = match otlp_endpoint() {
        None => (None, None),
        Some(endpoint) => {
            let exporter = OtlpProtocol::from_env()
                .and_then(|protocol| Ok((otlp::tracer_provider(&service, protocol)?, protocol)));
            match exporter {
                Ok((provider, protocol)) => (Some((provider, protocol, endpoint)), None),
                Err(e) => (None, Some(format!("{endpoint}: {e}"))),
            }
        }
    };
    let otel = provider.as_ref().map(|(provider, _, _)| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        otel_layer(provider)
    });
    let _ = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(filter))
        .with(otel)
        .try_init();
    if let Some(e) = error {
        tracing::error!(error = %e, "cannot set up OTLP trace export; running without it");
    }
    match provider {
        Some((provider, protocol, endpoint)) => {
            match protocol {
                OtlpProtocol::Grpc => tracing::info!(endpoint, "exporting traces over OTLP/gRPC"),
                OtlpProtocol::HttpProtobuf => {
                    tracing::info!(endpoint, "exporting traces over OTLP/HTTP (protobuf)")
                }
            }
            Telemetry {
                provider: Some(provider),
            }
        }
        None => Telemetry { provider: None },
    }
}

/// Log lines on stderr, as text or JSON. Span fields are formatted only for the spans a
/// line is written in ([`lazy_fields`]), not for every span when it is created.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
    // Colours only on a terminal: log files stay greppable (`addr=…`, `trace_id=…`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // No span events (`with_span_events`): the lazy layer replaces the fmt layer's
    // `on_new_span`, which is also where those would be written.
    match format {
        LogFormat::Text => lazy_fields::LazyFields::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
            DefaultFields::new(),
        )
        .boxed(),
        LogFormat::Json => lazy_fields::LazyFields::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr),
            JsonFields::new(),
        )
        .boxed(),
    }
}

/// The layer that turns spans into OpenTelemetry spans for `provider`'s exporter.
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Spans at info and above whatever RUST_LOG says (the export is not tied to how
    // chatty the logs are), the caller's included, and the per-job spans (`JOB_SPANS`, at
    // debug); not those of the transport crates, which would also trace the exporter itself.
    let mut targets = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(JOB_SPANS, LevelFilter::DEBUG);
    for quiet in [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "async_nats",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
        "opentelemetry_http",
        "redis",
    ] {
        targets = targets.with_target(quiet, LevelFilter::OFF);
    }
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER_NAME))
        .with_filter(targets)
}

//! Process plumbing shared by the jetinfer binaries: logs, traces, metrics, health, the
//! flags for them, and the shutdown signal. Depends on no other jetinfer crate.
//!
//! - [`init`] sets up logging (stderr, `RUST_LOG`, text or JSON) and, only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an
//!   OpenTelemetry tracer exporting over OTLP/gRPC. Without an endpoint no exporter, no
//!   OpenTelemetry layer and no per-span OpenTelemetry work exist. `OTEL_SERVICE_NAME`
//!   names the service and `OTEL_TRACES_SAMPLER` (/`_ARG`) picks the sampler (read by the
//!   SDK itself).
//! - [`context`]: W3C `traceparent` in and out of NATS headers and run requests, so one job
//!   is one trace across the client, the dispatcher and the worker; spans with explicit
//!   start and end times (queue waits measured from timestamps).
//! - [`prometheus`]: the Prometheus recorder behind the `metrics` macros, with our buckets.
//! - [`http`]: `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
//! - [`OpsArgs`]: the flags for all of that, flattened into each binary's configuration.
//! - [`signal`]: SIGTERM / Ctrl-C as a cancellation.

pub mod context;
pub mod http;
pub mod prometheus;
pub mod signal;

use std::net::SocketAddr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The name our spans are exported under (the instrumentation scope).
pub const TRACER_NAME: &str = "jetinfer";

/// How log lines are written on stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; job lines carry their span's fields, `trace_id` included.
    #[default]
    Text,
    /// One JSON object per line, with the fields of every span the line is in
    /// (`spans`), so each job line carries its `trace_id`.
    Json,
}

/// Observability flags shared by the dispatcher and the worker.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpsArgs {
    /// Log format on stderr.
    #[arg(long, env = "JETINFER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 0.0.0.0:9464. Port 0 picks a free port; the bound address is logged at start
    /// ("serving metrics and health"). Absent: no HTTP endpoint and no metrics recorder.
    #[arg(long, env = "JETINFER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Parse the configuration, print it (credentials redacted) and exit without
    /// connecting to anything. Used to check deployment files against the binary.
    #[arg(long)]
    pub check_config: bool,
    /// Threads of the async runtime (NATS, Redis, scheduling; a worker's forward passes run
    /// on their own device threads). Default: one per core. Fewer bound the process's CPU
    /// on a shared host; on the 16-core GPU host 4 threads gave the same jobs/s and the
    /// same CPU per job as 16 (docs/benchmarks.md).
    #[arg(long, env = "JETINFER_THREADS")]
    pub threads: Option<usize>,
}

impl OpsArgs {
    /// The multi-threaded tokio runtime sized by `--threads`.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or(cores).max(1);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

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

/// The OTLP endpoint from the environment, when export is wanted (not when
/// `OTEL_SDK_DISABLED=true`, as the OpenTelemetry specification says).
pub fn otlp_endpoint() -> Option<String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .find(|v| !v.trim().is_empty())
}

/// Sets up logging and, when an OTLP endpoint is configured, trace export; call it once,
/// inside the tokio runtime (the gRPC exporter needs it). `service` is the default
/// `service.name` (`OTEL_SERVICE_NAME` overrides it); `default_filter` applies when
/// `RUST_LOG` is unset.
pub fn init(service: &str, format: LogFormat, default_filter: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},opentelemetry=warn")));
    // Colours only on a terminal: log files stay greppable (`addr=…`, `trace_id=…`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider, error) = match otlp_endpoint() {
        None => (None, None, None),
        Some(endpoint) => match tracer_provider(service) {
            Ok(provider) => {
                let tracer = provider.tracer(TRACER_NAME);
                // Spans at info and above whatever RUST_LOG says (the export is not tied
                // to how chatty the logs are), the caller's included; not those of the
                // transport crates, which would also trace the exporter itself.
                let mut targets = Targets::new().with_default(LevelFilter::INFO);
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
                    "redis",
                ] {
                    targets = targets.with_target(quiet, LevelFilter::OFF);
                }
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(targets);
                opentelemetry::global::set_tracer_provider(provider.clone());
                (Some(layer), Some((provider, endpoint)), None)
            }
            Err(e) => (None, None, Some(format!("{endpoint}: {e}"))),
        },
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    if let Some(e) = error {
        tracing::error!(error = %e, "cannot set up OTLP trace export; running without it");
    }
    match provider {
        Some((provider, endpoint)) => {
            tracing::info!(endpoint, "exporting traces over OTLP/gRPC");
            Telemetry {
                provider: Some(provider),
            }
        }
        None => Telemetry { provider: None },
    }
}

fn tracer_provider(
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _TIMEOUT and _HEADERS.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| service.to_string());
    // The default config reads OTEL_TRACES_SAMPLER(_ARG); the batch processor reads
    // OTEL_BSP_SCHEDULE_DELAY and friends.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        ops: OpsArgs,
    }

    #[test]
    fn ops_flags_parse() {
        let c = Cli::try_parse_from([
            "x",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
            "--check-config",
        ])
        .unwrap();
        assert_eq!(c.ops.log_format, LogFormat::Json);
        assert_eq!(c.ops.metrics_addr.unwrap().port(), 0);
        assert!(c.ops.check_config);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}

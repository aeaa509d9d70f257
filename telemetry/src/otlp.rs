//! Trace export over OTLP, configured by the standard environment variables:
//! `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` (export only when set, and not with
//! `OTEL_SDK_DISABLED=true`), `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (`grpc`, the default,
//! or `http/protobuf`), `_TIMEOUT` and `_HEADERS`; `OTEL_TRACES_SAMPLER` (/`_ARG`) and
//! `OTEL_BSP_*` are read by the SDK itself.

use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::otlp_http::RuntimeClient;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (tonic), usually port 4317.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`POST <endpoint>/v1/traces`), usually port
    /// 4318.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol's name in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Parses a value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn parse(value: &str) -> Result<Self, OtlpError> {
        match value.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(OtlpError::UnsupportedProtocol(other.to_string())),
        }
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
    pub fn from_env() -> Result<Self, OtlpError> {
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .map_or(Ok(OtlpProtocol::Grpc), |v| OtlpProtocol::parse(&v))
    }
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP protocol {0:?} is not supported (use \"grpc\" or \"http/protobuf\")")]
    UnsupportedProtocol(String),
    #[error("the OTLP exporter needs a tokio runtime: {0}")]
    NoRuntime(#[from] tokio::runtime::TryCurrentError),
    #[error(transparent)]
    Exporter(#[from] ExporterBuildError),
}

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

/// A tracer provider exporting to the endpoint of the environment over `protocol`, with
/// a batch processor, for the service `service` (call it inside a tokio runtime).
pub fn tracer_provider(
    service: &str,
    protocol: OtlpProtocol,
) -> Result<SdkTracerProvider, OtlpError> {
    // The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _TIMEOUT and _HEADERS.
    let exporter = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?,
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(RuntimeClient::for_current_runtime()?)
            .build()?,
    };
    // The default config reads OTEL_TRACES_SAMPLER(_ARG); the batch processor reads
    // OTEL_BSP_SCHEDULE_DELAY and friends.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_their_standard_names() {
        assert_eq!(OtlpProtocol::parse("grpc").unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            OtlpProtocol::parse(" http/protobuf ").unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        assert!(matches!(
            OtlpProtocol::parse("http/json"),
            Err(OtlpError::UnsupportedProtocol(p)) if p == "http/json"
        ));
        for p in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            assert_eq!(OtlpProtocol::parse(p.as_str()).unwrap(), p);
        }
    }
}

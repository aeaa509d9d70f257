//! Trace export over OTLP/HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=
//! http/protobuf`), to a receiver in this test that answers as a collector does. Its own
//! test binary, since the exporter is configured by the process environment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use jetinfer_telemetry::LogFormat;

/// One request the receiver got: path, content type, body.
type Received = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock()
                    .unwrap()
                    .push(("/v1/traces".into(), content_type, body));
                // An empty ExportTraceServiceResponse: everything accepted.
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Bytes::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_http_protobuf_collector() {
    let (endpoint, got) = receiver().await;
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "50");
    let telemetry = jetinfer_telemetry::init("http-export-test", LogFormat::Text, "warn");
    assert!(telemetry.tracing_enabled());
    assert_eq!(jetinfer_telemetry::service_name(), "http-export-test");

    let span = tracing::info_span!("test.http_export", trace_id = tracing::field::Empty);
    jetinfer_telemetry::context::continue_trace_with_state(
        &span,
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("vendor=kept"),
    );
    span.in_scope(|| tracing::info!("inside"));
    drop(span);
    telemetry.flush().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let requests = loop {
        let requests = got.lock().unwrap().clone();
        if !requests.is_empty() || tokio::time::Instant::now() >= deadline {
            break requests;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!requests.is_empty(), "no export reached {endpoint}");
    let (path, content_type, body) = &requests[0];
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    // Protobuf keeps strings and ids as raw bytes.
    assert!(contains(b"test.http_export"), "span name missing: {body:?}");
    assert!(
        contains(b"http-export-test"),
        "service name missing: {body:?}"
    );
    assert!(contains(b"vendor=kept"), "tracestate missing: {body:?}");
    let trace_id = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    assert!(
        contains(&trace_id),
        "the continued trace id is missing: {body:?}"
    );
    telemetry.shutdown().await;
}

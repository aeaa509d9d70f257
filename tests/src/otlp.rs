//! A small OTLP/gRPC trace receiver for tests: the real wire protocol (tonic with the
//! OpenTelemetry protobufs), in this process, on a free port. Processes started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT=`[`Receiver::endpoint`] export their spans here, and tests
//! read them back as [`ReceivedSpan`]s, query a trace, and print it as a tree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// One received span, ids in lowercase hex as in `traceparent`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    /// The exported name (OpenTelemetry messaging names, e.g. `publish jetinfer.jobs.p1.mlp`).
    pub name: String,
    /// What the span is in jetinfer's terms, the same for every subject: see [`role_of`].
    pub role: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// `(trace id, span id)` of each link.
    pub links: Vec<(String, String)>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, String>,
}

/// The exported name of the dispatcher's run request span (one per job and attempt).
pub const DISPATCH_SPAN: &str = "send jetinfer.worker.{id}.run";
/// The exported name of a job's span in the worker.
pub const WORKER_JOB_SPAN: &str = "process jetinfer.worker.{id}.run";

/// The roles of the spans every job's trace holds after the producer's publish (cache
/// lookups only for cacheable jobs, so not listed).
pub const JOB_SPAN_ROLES: [&str; 8] = [
    "dispatcher.job",
    "jetstream.wait",
    "dispatcher.queue",
    "dispatcher.dispatch",
    "worker.job",
    "worker.validate",
    "worker.queue",
    "worker.result_write",
];

/// A span's role, whatever subject its name carries: `publish` (the producer's),
/// `dispatcher.job`, `dispatcher.dispatch`, `worker.job`; other spans keep their names.
pub fn role_of(name: &str) -> &str {
    if name.starts_with("publish jetinfer.jobs.") {
        "publish"
    } else if name.starts_with("process jetinfer.jobs.") {
        "dispatcher.job"
    } else if name == DISPATCH_SPAN {
        "dispatcher.dispatch"
    } else if name == WORKER_JOB_SPAN {
        "worker.job"
    } else {
        name
    }
}

impl ReceivedSpan {
    pub fn duration_ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format!("{d:.3}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(ReceivedSpan {
                        service: service.clone(),
                        role: role_of(&s.name).to_string(),
                        name: s.name,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                            .collect(),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attributes: attributes(&s.attributes),
                    });
                }
            }
        }
        self.spans
            .lock()
            .expect("collector lock: this is a bug")
            .extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The running receiver; stops with the test's runtime.
pub struct Receiver {
    addr: SocketAddr,
    collector: Collector,
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("OTLP receiver failed");
        });
        Receiver { addr, collector }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector
            .spans
            .lock()
            .expect("collector lock: this is a bug")
            .clone()
    }

    /// Waits until `done` holds for the received spans, or `timeout` passes; returns the
    /// spans either way.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The spans of `trace_id` as an indented tree (children by start time), with each
/// span's service, duration, offset from the trace's first span and a few attributes;
/// `extra` spans (e.g. batch spans linked from other traces) are printed after it, with
/// their links.
pub fn render_tree(spans: &[ReceivedSpan], trace_id: &str, extra: &[ReceivedSpan]) -> String {
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let t0 = in_trace.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let ids: std::collections::HashSet<&str> =
        in_trace.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = format!("trace {trace_id}\n");
    let mut roots: Vec<&ReceivedSpan> = in_trace
        .iter()
        .copied()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    roots.sort_by_key(|s| s.start_ns);
    for r in roots {
        write_node(&mut out, &in_trace, r, t0, 0);
    }
    for s in extra {
        let _ = writeln!(out, "{}", line(s, t0));
        for (t, sp) in &s.links {
            let _ = writeln!(out, "    link → trace {t} span {sp}");
        }
    }
    out
}

fn line(s: &ReceivedSpan, t0: u64) -> String {
    const SHOWN: &[&str] = &[
        "messaging.message.id",
        "messaging.batch.message_count",
        "jetinfer.model",
        "jetinfer.version",
        "jetinfer.device",
        "jetinfer.priority",
        "jetinfer.worker",
        "jetinfer.cache",
        "jetinfer.status",
        "jetinfer.compute_ms",
        "hit",
        "valid",
        "stored",
    ];
    let attrs: Vec<String> = s
        .attributes
        .iter()
        .filter(|(k, _)| SHOWN.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} [{}] +{:.2} ms, {:.2} ms {}",
        s.name,
        s.service,
        s.start_ns.saturating_sub(t0) as f64 / 1e6,
        s.duration_ms(),
        attrs.join(" ")
    )
}

fn write_node(out: &mut String, all: &[&ReceivedSpan], s: &ReceivedSpan, t0: u64, depth: usize) {
    let _ = writeln!(out, "{}{}", "    ".repeat(depth), line(s, t0));
    let mut children: Vec<&ReceivedSpan> = all
        .iter()
        .copied()
        .filter(|c| c.parent_span_id == s.span_id)
        .collect();
    children.sort_by_key(|c| c.start_ns);
    for c in children {
        write_node(out, all, c, t0, depth + 1);
    }
}

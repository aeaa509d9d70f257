//! Observability across real processes: one job is one trace from the client's publish
//! through the dispatcher to the worker (exported over OTLP/gRPC to a receiver inside this
//! test), with the batch span linked to the job; and both processes serve Prometheus
//! metrics named as docs/metrics.md lists them, plus /healthz and /readyz.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::{Job, Priority, Status, Tensor};
use jetinfer_telemetry::context::remote_context;
use jetinfer_telemetry::{self, LogFormat};
use jetinfer_tests::otlp::{render_tree, ReceivedSpan, Receiver, DISPATCH_SPAN, WORKER_JOB_SPAN};
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id};

/// Makes `span` a child of the remote span in `traceparent`, as a producer's caller would.
fn set_parent(span: &tracing::Span, traceparent: &str) {
    jetinfer_telemetry::context::continue_trace(span, Some(traceparent));
}

fn one_span<'a>(spans: &'a [ReceivedSpan], trace: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.role == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} span in trace {trace}, got {}:\n{}",
        found.len(),
        render_tree(spans, trace, &[])
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_from_publish_through_dispatcher_to_worker() {
    let receiver = Receiver::start().await;
    // This process is the producer: its spans go to the same receiver.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let producer = jetinfer_telemetry::init("test-producer", LogFormat::Text, "warn");
    assert!(producer.tracing_enabled());
    // Read at set-up only: the other test's processes must not inherit them.
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    std::env::remove_var("OTEL_BSP_SCHEDULE_DELAY");

    let mut stack = LocalStack::builder()
        .workers(1)
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let client = stack.client().await.unwrap();

    // A known trace id: the job's spans must all carry it.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let root_span_id = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("00-{trace_id}-{root_span_id}-01");
    assert!(remote_context(&traceparent, None).is_some());
    let root = tracing::info_span!("test.request", trace_id = tracing::field::Empty);
    set_parent(&root, &traceparent);

    let sample = golden().samples("mlp").remove(0);
    let id = format!("{}-traced", run_id("otel"));
    let mut job = Job::new(id.clone(), "mlp".to_string(), sample.inputs.clone());
    job.cache = Some(false);
    // Other traffic at the same time (each job its own trace), so the traced job shares
    // its forward with others, as under load.
    let background = async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        publish_samples(&client, "mlp", 15, Priority::P2, &format!("{id}-bg")).await
    };
    let traced = async {
        use tracing::Instrument;
        client
            .submit(Priority::P1, &job)
            .instrument(root.clone())
            .await
            .unwrap();
    };
    let (others, ()) = tokio::join!(background, traced);
    drop(root);
    let result = client.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(result.status, Status::Ok, "{:?}", result.error);
    assert_all_correct(&client, &others, Duration::from_secs(30)).await;
    producer.flush().await;

    let wanted = [
        "test.request",
        "publish",
        "dispatcher.job",
        "jetstream.wait",
        "dispatcher.queue",
        "dispatcher.dispatch",
        "worker.job",
        "worker.validate",
        "worker.queue",
        "worker.result_write",
    ];
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            let names: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| s.role.as_str())
                .collect();
            // The dispatcher's job span ends at the ack, after the worker's spans.
            let job_spans: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id && s.role == "worker.job")
                .map(|s| s.span_id.as_str())
                .collect();
            wanted.iter().all(|w| names.contains(w))
                && spans.iter().any(|s| {
                    s.role == "worker.batch"
                        && s.links
                            .iter()
                            .any(|(_, sp)| job_spans.contains(sp.as_str()))
                })
        })
        .await;
    let tree_spans: Vec<ReceivedSpan> = spans.clone();
    let publish = one_span(&spans, &trace_id, "publish");
    let d_job = one_span(&spans, &trace_id, "dispatcher.job");
    let dispatch = one_span(&spans, &trace_id, "dispatcher.dispatch");
    let w_job = one_span(&spans, &trace_id, "worker.job");

    // Names and attributes after the OpenTelemetry messaging conventions.
    let subject = job_subject(Priority::P1, "mlp");
    assert_eq!(publish.name, format!("publish {subject}"));
    assert_eq!(d_job.name, format!("process {subject}"));
    assert_eq!(dispatch.name, DISPATCH_SPAN);
    assert_eq!(w_job.name, WORKER_JOB_SPAN);
    for s in [publish, d_job, dispatch, w_job] {
        assert_eq!(
            s.attributes.get("messaging.system").map(String::as_str),
            Some("nats")
        );
    }
    for (s, operation) in [
        (publish, "publish"),
        (d_job, "process"),
        (dispatch, "send"),
        (w_job, "process"),
    ] {
        assert_eq!(
            s.attributes
                .get("messaging.operation.type")
                .map(String::as_str),
            Some(operation),
            "{}",
            s.name
        );
    }
    assert_eq!(
        publish.attributes.get("messaging.destination.name"),
        Some(&subject)
    );
    assert_eq!(publish.attributes.get("messaging.message.id"), Some(&id));
    assert_eq!(d_job.attributes.get("messaging.message.id"), Some(&id));

    // publish → dispatcher.job → dispatcher.dispatch → worker.job, across three processes.
    let request = one_span(&spans, &trace_id, "test.request");
    assert_eq!(request.parent_span_id, root_span_id);
    assert_eq!(publish.service, "test-producer");
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(d_job.service, "jetinfer-dispatcher");
    assert_eq!(d_job.parent_span_id, publish.span_id);
    assert_eq!(dispatch.parent_span_id, d_job.span_id);
    assert_eq!(w_job.service, "jetinfer-worker");
    assert_eq!(w_job.parent_span_id, dispatch.span_id);
    assert_eq!(w_job.attributes.get("messaging.message.id"), Some(&id));
    assert_eq!(
        w_job.attributes.get("jetinfer.model").map(String::as_str),
        Some("mlp")
    );
    assert_eq!(
        w_job.attributes.get("jetinfer.status").map(String::as_str),
        Some("ok")
    );
    for (child, parent) in [
        ("jetstream.wait", d_job),
        ("dispatcher.queue", d_job),
        ("worker.validate", w_job),
        ("worker.queue", w_job),
        ("worker.result_write", w_job),
    ] {
        assert_eq!(
            one_span(&spans, &trace_id, child).parent_span_id,
            parent.span_id,
            "{child} is not a child of {}",
            parent.name
        );
    }
    // The forward is its own span, linked to the job's span.
    let batch: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.role == "worker.batch"
                && s.links
                    .iter()
                    .any(|(t, sp)| *t == trace_id && *sp == w_job.span_id)
        })
        .cloned()
        .collect();
    assert_eq!(
        batch.len(),
        1,
        "one batch span linked to the job span expected:\n{}",
        render_tree(&spans, &trace_id, &[])
    );
    let b = &batch[0];
    assert_eq!(b.service, "jetinfer-worker");
    assert_eq!(
        b.attributes.get("jetinfer.model").map(String::as_str),
        Some("mlp")
    );
    assert_eq!(
        b.attributes.get("jetinfer.device").map(String::as_str),
        Some("cpu")
    );
    assert!(b.attributes.contains_key("messaging.batch.message_count"));
    // No payloads in attributes: no value is as long as a tensor's bytes would make it.
    for s in spans.iter().filter(|s| s.trace_id == trace_id) {
        for (k, v) in &s.attributes {
            assert!(
                v.len() < 200,
                "attribute {k} of {} is suspiciously long",
                s.name
            );
        }
    }
    // Log lines of a job name its trace: a job the worker refuses, in a second trace.
    let bad_trace = format!("{:032x}", rand::random::<u128>() | 1);
    let bad_root = tracing::info_span!("test.request", trace_id = tracing::field::Empty);
    set_parent(&bad_root, &format!("00-{bad_trace}-{root_span_id}-01"));
    let bad = Job::new(
        format!("{id}-bad"),
        "mlp".to_string(),
        vec![Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0])],
    );
    {
        use tracing::Instrument;
        client
            .submit(Priority::P1, &bad)
            .instrument(bad_root)
            .await
            .unwrap();
    }
    let r = client.wait(&bad.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.status, Status::Error);
    let log = std::fs::read_to_string(stack.workers()[0].log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&*bad.id) && l.contains("answered with an error"))
        .unwrap_or_else(|| panic!("no log line for {} in the worker log:\n{log}", bad.id));
    assert!(
        line.contains(&bad_trace),
        "the job's log line lacks its trace id: {line}"
    );
    println!("{line}");

    println!("{}", render_tree(&tree_spans, &trace_id, &batch));
    stack.stop();
}

/// The `addr` a process logged for its metrics endpoint (text or JSON logs).
async fn bound_addr(log: &Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("serving metrics and health"))
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(a) = v["fields"]["addr"].as_str() {
                    return a.to_string();
                }
            }
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap_or("").to_string();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics address in {}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP/1.1 GET: (status, body).
async fn get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Metric family names in a Prometheus text exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Metric names docs/metrics.md lists (first column of its tables), per process.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo_root().unwrap().join("docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `jetinfer_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("jetinfer_{n}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_of_dispatcher_and_worker() {
    let mut stack = LocalStack::builder()
        .workers(1)
        .env("RUST_LOG", "info")
        .dispatcher_args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .worker_args(["--metrics-addr", "127.0.0.1:0"])
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let d_addr = bound_addr(stack.dispatcher().unwrap().log_path()).await;
    let w_addr = bound_addr(stack.workers()[0].log_path()).await;
    let client = stack.client().await.unwrap();

    // Traffic that touches every counter: good jobs (the same inputs twice, so the second
    // may come from the cache), a job the worker refuses, a message the dispatcher refuses.
    let run = run_id("metrics");
    let sample = golden().samples("mlp").remove(0);
    for i in 0..2 {
        let job = Job::new(
            format!("{run}-ok-{i}"),
            "mlp".to_string(),
            sample.inputs.clone(),
        );
        client.submit(Priority::P0, &job).await.unwrap();
        client.wait(&job.id, Duration::from_secs(30)).await.unwrap();
    }
    let bad = Job::new(
        format!("{run}-bad-shape"),
        "mlp".to_string(),
        vec![Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0])],
    );
    client.submit(Priority::P2, &bad).await.unwrap();
    let r = client.wait(&bad.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.status, Status::Error);
    let garbage_id = format!("{run}-garbage");
    client
        .publish_raw(
            &job_subject(Priority::P1, "mlp"),
            &garbage_id,
            bytes::Bytes::from_static(b"\xc1"),
        )
        .await
        .unwrap();
    client
        .wait(&garbage_id, Duration::from_secs(30))
        .await
        .unwrap();
    // Heartbeats and the dispatcher's acks land within a moment of the results.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (code, d_text) = get(&d_addr, "/metrics").await;
    assert_eq!(code, 200);
    let (code, w_text) = get(&w_addr, "/metrics").await;
    assert_eq!(code, 200);
    let mut exported = families(&d_text);
    exported.extend(families(&w_text));
    let documented = documented();
    // Every exported metric is documented, and every documented one is exported (the GPU
    // gauges only with a CUDA device).
    let undocumented: Vec<&String> = exported
        .iter()
        .filter(|n| n.starts_with("jetinfer_") && !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    let missing: Vec<&String> = documented
        .iter()
        .filter(|n| !exported.contains(*n) && !n.starts_with("jetinfer_gpu_"))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n--- dispatcher\n{d_text}\n--- worker\n{w_text}"
    );
    for n in &exported {
        assert!(
            n.starts_with("jetinfer_"),
            "metric {n} is not named jetinfer_<name>_<unit>"
        );
    }
    // Values that this traffic must have produced.
    assert!(
        d_text.contains(
            r#"jetinfer_dispatcher_jobs_failed_total{priority="p1",model="mlp",code="bad_payload"} 1"#
        ),
        "{d_text}"
    );
    assert!(
        w_text.contains(
            r#"jetinfer_worker_jobs_failed_total{priority="p2",model="mlp",code="invalid_input"} 1"#
        ),
        "{w_text}"
    );
    assert!(
        d_text.contains(r#"jetinfer_jobs_completed_total{priority="p0",model="mlp"} 2"#),
        "{d_text}"
    );
    assert!(
        d_text.contains(
            r#"jetinfer_job_duration_seconds_bucket{priority="p0",model="mlp",version="default",le="#
        ),
        "{d_text}"
    );
    assert!(
        d_text.contains(r#"jetinfer_queue_depth_jobs{priority="p0"} 0"#),
        "{d_text}"
    );
    assert!(d_text.contains("jetinfer_workers 1"), "{d_text}");
    assert!(
        w_text.contains(r#"jetinfer_cache_hits_total{model="mlp"} 1"#),
        "{w_text}"
    );
    assert!(
        w_text.contains(r#"jetinfer_batch_size_jobs_bucket{model="mlp",le="1"}"#),
        "{w_text}"
    );
    assert!(
        w_text.contains("jetinfer_worker_in_flight_jobs 0"),
        "{w_text}"
    );

    // Health: alive and ready, naming what is served.
    for addr in [&d_addr, &w_addr] {
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], true, "{body}");
        assert_eq!(v["nats"], "connected", "{body}");
        assert_eq!(v["redis"], "ok", "{body}");
    }
    let (_, body) = get(&w_addr, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let served: Vec<String> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["name"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            )
        })
        .collect();
    assert!(served.contains(&"mlp:1".to_string()), "{body}");
    let (_, body) = get(&d_addr, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["workers"][0]["id"], "worker-0", "{body}");
    assert!(body.contains(r#""name":"mlp""#), "{body}");

    // JSON logs: one object per line, and the job lines carry the trace id field.
    let log = std::fs::read_to_string(stack.dispatcher().unwrap().log_path()).unwrap();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // Readiness follows Redis: stopped Redis → 503.
    stack.redis_server().unwrap().stop();
    let (code, body) = get(&w_addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let (code, _) = get(&w_addr, "/healthz").await;
    assert_eq!(code, 200);
    stack.stop();
}

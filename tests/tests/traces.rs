//! Traces across real processes: one job is one trace from the client's publish through
//! the dispatcher to the worker (exported over OTLP/gRPC to a receiver inside this test),
//! named after the OpenTelemetry messaging conventions, with the batch span linked to the
//! job. The metrics and health endpoints are checked in `metrics_endpoints.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use jetinfer_devkit::local::LocalStack;
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::{Job, Priority, Status, Tensor};
use jetinfer_telemetry::context::remote_context;
use jetinfer_telemetry::{self, LogFormat};
use jetinfer_tests::logs::wait_for_line;
use jetinfer_tests::otlp::{
    render_tree, ReceivedSpan, Receiver, DISPATCH_SPAN, JOB_SPAN_ROLES, WORKER_JOB_SPAN,
};
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
    let (producer, mut stack) = start_traced(&receiver).await;
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

    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| complete(spans, &trace_id))
        .await;
    let tree_spans: Vec<ReceivedSpan> = spans.clone();
    let trace = Trace {
        spans: &spans,
        trace_id: &trace_id,
        id: &id,
    };
    trace.check_messaging_names();
    trace.check_parentage(&root_span_id);
    let batch = trace.check_batch_link();
    log_lines_name_their_trace(&client, &mut stack, &id, &root_span_id).await;

    println!("{}", render_tree(&tree_spans, &trace_id, &batch));
    stack.stop();
}

/// The received spans of the traced job.
struct Trace<'a> {
    spans: &'a [ReceivedSpan],
    trace_id: &'a str,
    /// The job id.
    id: &'a String,
}

impl Trace<'_> {
    fn span(&self, role: &str) -> &ReceivedSpan {
        one_span(self.spans, self.trace_id, role)
    }

    /// Names and attributes after the OpenTelemetry messaging conventions.
    fn check_messaging_names(&self) {
        let (id, publish, d_job) = (self.id, self.span("publish"), self.span("dispatcher.job"));
        let (dispatch, w_job) = (self.span("dispatcher.dispatch"), self.span("worker.job"));
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
        assert_eq!(publish.attributes.get("messaging.message.id"), Some(id));
        assert_eq!(d_job.attributes.get("messaging.message.id"), Some(id));
    }

    /// publish → dispatcher.job → dispatcher.dispatch → worker.job, across three processes,
    /// under the test's own root span; each wait and write span under its job span.
    fn check_parentage(&self, root_span_id: &str) {
        let (id, publish, d_job) = (self.id, self.span("publish"), self.span("dispatcher.job"));
        let (dispatch, w_job) = (self.span("dispatcher.dispatch"), self.span("worker.job"));
        let request = self.span("test.request");
        assert_eq!(request.parent_span_id, root_span_id);
        assert_eq!(publish.service, "test-producer");
        assert_eq!(publish.parent_span_id, request.span_id);
        assert_eq!(d_job.service, "jetinfer-dispatcher");
        assert_eq!(d_job.parent_span_id, publish.span_id);
        assert_eq!(dispatch.parent_span_id, d_job.span_id);
        assert_eq!(w_job.service, "jetinfer-worker");
        assert_eq!(w_job.parent_span_id, dispatch.span_id);
        assert_eq!(w_job.attributes.get("messaging.message.id"), Some(id));
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
                self.span(child).parent_span_id,
                parent.span_id,
                "{child} is not a child of {}",
                parent.name
            );
        }
    }

    /// The forward is its own span, linked to the job's span; no attribute carries a payload.
    fn check_batch_link(&self) -> Vec<ReceivedSpan> {
        let (spans, trace_id, w_job) = (self.spans, self.trace_id, self.span("worker.job"));
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
        batch
    }
}

/// Log lines of a job name its trace: a job the worker refuses, in a second trace.
async fn log_lines_name_their_trace(
    client: &jetinfer_client::Client,
    stack: &mut LocalStack,
    id: &str,
    root_span_id: &str,
) {
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
    // The worker logs the answer after storing it (and after the completion notice that
    // `wait` returns on): wait for the line rather than read the log once.
    let what = format!("log line for {}", bad.id);
    let line = wait_for_line(
        stack.workers()[0].log_path(),
        Duration::from_secs(10),
        &what,
        |l| (l.contains(&*bad.id) && l.contains("answered with an error")).then(|| l.to_string()),
    )
    .await;
    assert!(
        line.contains(&bad_trace),
        "the job's log line lacks its trace id: {line}"
    );
    println!("{line}");
}

/// A producer exporting its spans to `receiver`, and a stack whose processes do too.
async fn start_traced(receiver: &Receiver) -> (jetinfer_telemetry::Telemetry, LocalStack) {
    // This process is the producer: its spans go to the same receiver.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let producer = jetinfer_telemetry::init("test-producer", LogFormat::Text, "warn");
    assert!(producer.tracing_enabled());
    // Read at set-up only: the other test's processes must not inherit them.
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    std::env::remove_var("OTEL_BSP_SCHEDULE_DELAY");

    let stack = LocalStack::builder()
        .workers(1)
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    (producer, stack)
}

/// Whether every span of the traced job has arrived, the batch span linking it included
/// (the dispatcher's job span ends at the ack, after the worker's spans).
fn complete(spans: &[ReceivedSpan], trace_id: &str) -> bool {
    let mut wanted = ["test.request", "publish"]
        .into_iter()
        .chain(JOB_SPAN_ROLES);
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
    wanted.all(|w| names.contains(w))
        && spans.iter().any(|s| {
            s.role == "worker.batch"
                && s.links
                    .iter()
                    .any(|(_, sp)| job_spans.contains(sp.as_str()))
        })
}

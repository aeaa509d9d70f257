//! The demo, traced: `jetinfer demo` (its own local stack: nats-server, redis-server, a
//! dispatcher and two workers) runs with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an
//! OTLP receiver inside this test. Every job must arrive as one complete trace — the CLI's
//! publish, the dispatcher's spans, the worker's spans — and every job's span must be
//! linked from a batch span. One trace is printed as a tree (docs/observability.md shows
//! one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jetinfer_devkit::local::{binary, repo_root};
use jetinfer_tests::otlp::{render_tree, ReceivedSpan, Receiver, JOB_SPAN_ROLES};

const JOBS: usize = 90;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_job_is_one_complete_trace() {
    let receiver = Receiver::start().await;
    let logs = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(binary("jetinfer").unwrap())
        .args(["demo", "--jobs", &JOBS.to_string(), "--workers", "2"])
        .arg("--log-dir")
        .arg(logs.path())
        .current_dir(repo_root().unwrap())
        // Its own stack, whatever this environment says.
        .env_remove("NATS_URL")
        .env_remove("REDIS_URL")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .output()
        .await
        .expect("running jetinfer demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo failed:\n{text}");

    // The demo stops its processes gracefully, and each flushes its spans on the way out;
    // allow a moment for the last export to land.
    let complete = |spans: &[ReceivedSpan]| {
        let by_trace = by_trace(spans);
        let published = by_trace
            .values()
            .filter(|names| names.contains("publish"))
            .count();
        published == JOBS
            && by_trace
                .values()
                .filter(|n| n.contains("publish"))
                .all(|n| n.contains("dispatcher.job") && n.contains("worker.result_write"))
    };
    let spans = receiver.wait_for(Duration::from_secs(20), complete).await;
    let traces = by_trace(&spans);
    let published: Vec<&String> = traces
        .iter()
        .filter(|(_, n)| n.contains("publish"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(published.len(), JOBS, "traces with a publish span");
    for trace in &published {
        let names = &traces[*trace];
        for wanted in JOB_SPAN_ROLES {
            assert!(
                names.contains(wanted),
                "trace {trace} lacks {wanted}:\n{}",
                render_tree(&spans, trace, &[])
            );
        }
    }
    // Services as configured by default.
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for s in ["jetinfer", "jetinfer-dispatcher", "jetinfer-worker"] {
        assert!(services.contains(s), "no spans from {s}: {services:?}");
    }
    // Every job's worker span is linked from exactly one batch span.
    let mut linked: BTreeMap<&str, usize> = BTreeMap::new();
    for b in spans.iter().filter(|s| s.role == "worker.batch") {
        for (_, span) in &b.links {
            *linked.entry(span.as_str()).or_default() += 1;
        }
    }
    for job in spans.iter().filter(|s| s.role == "worker.job") {
        assert_eq!(
            linked.get(job.span_id.as_str()),
            Some(&1),
            "worker.job {} of trace {} is not linked from exactly one batch",
            job.span_id,
            job.trace_id
        );
    }

    // Print the trace whose forward served the most jobs.
    let batch = spans
        .iter()
        .filter(|s| s.role == "worker.batch")
        .max_by_key(|s| s.links.len())
        .expect("a batch span")
        .clone();
    let job = spans
        .iter()
        .find(|s| s.role == "worker.job" && s.span_id == batch.links[0].1)
        .expect("the batch's first job");
    println!(
        "{}",
        render_tree(&spans, &job.trace_id, std::slice::from_ref(&batch))
    );
}

/// Span names per trace id.
fn by_trace(spans: &[ReceivedSpan]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in spans {
        out.entry(s.trace_id.clone())
            .or_default()
            .insert(s.role.clone());
    }
    out
}

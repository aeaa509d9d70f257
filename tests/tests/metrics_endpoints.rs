//! Both processes serve Prometheus metrics named as docs/metrics.md lists them (every
//! exported series documented, every documented one exported), plus /healthz and /readyz.

use std::collections::BTreeSet;
use std::time::Duration;

use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::{Job, Priority, Status, Tensor};
use jetinfer_tests::http::{get, metrics_addr};
use jetinfer_tests::{golden, run_id};

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
    let d_addr = metrics_addr(stack.dispatcher().unwrap().log_path()).await;
    let w_addr = metrics_addr(stack.workers()[0].log_path()).await;
    let client = stack.client().await.unwrap();
    send_traffic(&client).await;

    let (code, d_text) = get(&d_addr, "/metrics").await;
    assert_eq!(code, 200);
    let (code, w_text) = get(&w_addr, "/metrics").await;
    assert_eq!(code, 200);
    names_match_the_docs(&d_text, &w_text);
    values_follow_the_traffic(&d_text, &w_text);
    health_names_what_is_served(&d_addr, &w_addr).await;

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

/// Traffic that touches every counter: good jobs (the same inputs twice, so the second may
/// come from the cache), a job the worker refuses, a message the dispatcher refuses.
async fn send_traffic(client: &jetinfer_client::Client) {
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
}

/// Every exported metric is documented in docs/metrics.md, every documented one is exported
/// (the GPU gauges only with a CUDA device), and all are named `jetinfer_…`.
fn names_match_the_docs(d_text: &str, w_text: &str) {
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
        // The routing counter only with a model registry (this stack has none).
        .filter(|n| {
            !exported.contains(*n)
                && !n.starts_with("jetinfer_gpu_")
                && *n != "jetinfer_dispatcher_routed_total"
        })
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
}

/// Values that the traffic of [`send_traffic`] must have produced.
fn values_follow_the_traffic(d_text: &str, w_text: &str) {
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
}

/// Health: alive and ready, naming what is served.
async fn health_names_what_is_served(d_addr: &str, w_addr: &str) {
    for addr in [d_addr, w_addr] {
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], true, "{body}");
        assert_eq!(v["nats"], "connected", "{body}");
        assert_eq!(v["redis"], "ok", "{body}");
    }
    let (_, body) = get(w_addr, "/readyz").await;
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
    let (_, body) = get(d_addr, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["workers"][0]["id"], "worker-0", "{body}");
    assert!(body.contains(r#""name":"mlp""#), "{body}");
    // Per model, declared (no registry here: none) vs loaded by live workers.
    assert_eq!(
        v["models"]["mlp"]["declared"],
        serde_json::json!([]),
        "{body}"
    );
    assert!(
        v["models"]["mlp"]["loaded"]
            .as_array()
            .is_some_and(|l| l.contains(&serde_json::json!("1"))),
        "{body}"
    );
}

//! `/metrics` of a process: the `jetinfer_build_info` gauge, and process metrics read from
//! the operating system again on each scrape. Its own test binary, since it installs the
//! process-wide recorder.

use std::net::SocketAddr;
use std::sync::Arc;

use jetinfer_telemetry::http::{serve, Readiness, ReadyCheck};
use jetinfer_telemetry::prometheus::{install_for, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample named exactly `name` (no labels).
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_and_process_metrics_refreshed_on_each_scrape() {
    let metrics = install_for("metrics-test").unwrap();
    let ready: ReadyCheck = Arc::new(|| {
        Box::pin(async {
            Readiness {
                ready: true,
                body: serde_json::json!({}),
            }
        })
    });
    let shutdown = CancellationToken::new();
    let addr = serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        ready,
        shutdown.clone(),
    )
    .await
    .unwrap();

    let first = get(addr, "/metrics").await;
    let build_info =
        format!(r#"jetinfer_build_info{{service="metrics-test",version="{VERSION}"}} 1"#);
    assert!(first.contains(&build_info), "{first}");
    // Whole seconds, and a 0 address-space limit means unlimited: present, maybe 0.
    for name in [
        "jetinfer_process_cpu_seconds_total",
        "jetinfer_process_virtual_memory_max_bytes",
    ] {
        assert!(value(&first, name) >= 0.0, "{name} in\n{first}");
    }
    for name in [
        "jetinfer_process_open_fds",
        "jetinfer_process_max_fds",
        "jetinfer_process_virtual_memory_bytes",
        "jetinfer_process_start_time_seconds",
        "jetinfer_process_threads",
    ] {
        assert!(value(&first, name) > 0.0, "{name} in\n{first}");
    }
    let rss_before = value(&first, "jetinfer_process_resident_memory_bytes");
    assert!(rss_before > 0.0);

    // 64 MiB written (so resident): the next scrape must see them.
    let ballast = vec![7u8; 64 << 20];
    let second = get(addr, "/metrics").await;
    let rss_after = value(&second, "jetinfer_process_resident_memory_bytes");
    assert!(
        rss_after >= rss_before + 32.0 * 1024.0 * 1024.0,
        "resident memory not refreshed: {rss_before} then {rss_after}"
    );
    assert_eq!(
        ballast.iter().map(|&b| b as usize).sum::<usize>(),
        7 * (64 << 20)
    );
    shutdown.cancel();
}

//! Talking to the processes' metrics and health endpoints (`/metrics`, `/healthz`,
//! `/readyz`) with a bare HTTP/1.1 client, so the tests need no HTTP client crate.

use std::path::Path;
use std::time::Duration;

use crate::logs::wait_for_line;

/// The `addr` a dispatcher or worker logged for its metrics endpoint (the
/// "serving metrics and health" line, text or JSON logs), waiting up to 30 s for it.
/// Needed because the tests start processes with `--metrics-addr 127.0.0.1:0`.
pub async fn metrics_addr(log: &Path) -> String {
    wait_for_line(log, Duration::from_secs(30), "metrics address", |line| {
        if !line.contains("serving metrics and health") {
            return None;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(a) = v["fields"]["addr"].as_str() {
                return Some(a.to_string());
            }
        }
        line.split("addr=")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
    })
    .await
}

/// A plain HTTP/1.1 `GET path` to `addr` (connection closed after one response):
/// (status code, 0 if none could be read; body).
pub async fn get(addr: &str, path: &str) -> (u16, String) {
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

/// The body of `GET /metrics`, which must answer 200.
pub async fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics on {addr}:\n{body}");
    body
}

/// The `/readyz` body as JSON (whatever its status: 503 also carries the document).
pub async fn readyz(addr: &str) -> serde_json::Value {
    let (status, body) = get(addr, "/readyz").await;
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("readyz body is not JSON ({e}), status {status}: {body}"))
}

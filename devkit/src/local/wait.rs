//! Readiness checks: a TCP port that accepts, the jobs stream, and workers announcing
//! themselves on the heartbeat subject.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use jetinfer_connect::streams::partition_count;
use jetinfer_schemas::names::HEARTBEAT_SUBJECT;
use jetinfer_schemas::partitions::partition_stream;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::Priority;

use super::LocalError;

/// Polls until `port` on 127.0.0.1 accepts a connection, calling `alive` between tries so
/// a server that died is reported at once rather than after the timeout.
pub(crate) fn wait_for_tcp(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), LocalError>,
) -> Result<(), LocalError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: format!("port {port} accepting"),
                timeout,
                detail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every priority's jobs streams exist (the dispatcher creates them at start,
/// P0 first, each priority's partitions in order).
pub async fn wait_for_stream(js: &jetstream::Context, timeout: Duration) -> Result<(), LocalError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // P2's partition 0 says how many partitions there are; the last one is made last.
        let partitions = partition_count(js, Priority::P2).await;
        let last = partition_stream(Priority::P2, partitions - 1);
        let last_error = match js.get_stream(&last).await {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: format!("stream {last} created"),
                timeout,
                detail: format!(" (last answer: {last_error})"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `n` distinct workers announced on `jetinfer.workers.heartbeat` that they
/// accept work and serve at least one model; returns their latest heartbeats by id.
pub async fn wait_for_workers(
    nats: &async_nats::Client,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Heartbeat>, LocalError> {
    let mut sub = nats
        .subscribe(HEARTBEAT_SUBJECT)
        .await
        .map_err(LocalError::Subscribe)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ready: BTreeMap<String, Heartbeat> = BTreeMap::new();
    let mut heard: BTreeMap<String, String> = BTreeMap::new();
    while ready.len() < n {
        let msg = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return Err(LocalError::SubscriptionEnded),
            Err(_) => {
                let seen: Vec<String> = heard
                    .iter()
                    .map(|(id, state)| format!("{id} ({state})"))
                    .collect();
                return Err(LocalError::Timeout {
                    what: format!("{n} ready workers"),
                    timeout,
                    detail: format!("; heard from {}: [{}]", heard.len(), seen.join(", ")),
                });
            }
        };
        let Ok(hb) = rmp_serde::from_slice::<Heartbeat>(&msg.payload) else {
            tracing::warn!(bytes = msg.payload.len(), "undecodable heartbeat ignored");
            continue;
        };
        let state = if !hb.accepting {
            "not accepting"
        } else if hb.models.is_empty() {
            "no models"
        } else {
            "ready"
        };
        heard.insert(hb.worker.clone(), state.to_string());
        if hb.accepting && !hb.models.is_empty() {
            ready.insert(hb.worker.clone(), hb);
        } else {
            ready.remove(&hb.worker);
        }
    }
    Ok(ready.into_values().collect())
}

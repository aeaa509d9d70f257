//! Listening to worker heartbeats (`jetinfer.workers.heartbeat`, one per worker per
//! second), for `stats` and `models`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use jetinfer_schemas::names::HEARTBEAT_SUBJECT;
use jetinfer_schemas::worker::Heartbeat;

/// Subscribes to heartbeats; subscribe before other reads so none sent meanwhile is missed.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    nats.subscribe(HEARTBEAT_SUBJECT)
        .await
        .context("subscribing to heartbeats")
}

/// The latest heartbeat of every worker heard within `window`, by worker id.
pub async fn collect(mut sub: async_nats::Subscriber, window: Duration) -> Vec<Heartbeat> {
    let mut latest = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(hb) = rmp_serde::from_slice::<Heartbeat>(&msg.payload) {
            latest.insert(hb.worker.clone(), hb);
        }
    }
    latest.into_values().collect()
}

//! Whether the result store (Redis) is reachable. While it is not, the dispatcher stops
//! pulling and stops dispatching: nothing could be stored, so nothing could be acked, and
//! pulling would only age messages towards redelivery. Held jobs keep their in-progress
//! acks, so a Redis outage spends none of their redelivery budget.

use std::time::Duration;

use jetinfer_store::ResultStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the store is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Probes the store until `shutdown`, publishing reachability on `tx`.
pub(crate) async fn watch_store(
    store: ResultStore,
    tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probe = tokio::time::timeout(Duration::from_secs(1), store.ping()).await;
        let ok = matches!(probe, Ok(Ok(())));
        if *tx.borrow() != ok {
            if ok {
                tracing::info!("result store reachable again; resuming");
            } else {
                let why = match probe {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 1 s".to_string(),
                };
                tracing::warn!(error = %why, "result store unreachable; pausing intake and dispatch");
            }
            tx.send_replace(ok);
        }
    }
}

/// Waits until the store is reachable (or the sender is gone).
pub(crate) async fn until_reachable(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|ok| *ok).await;
}

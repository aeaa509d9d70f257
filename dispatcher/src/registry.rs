//! The model registry as the intake checks and routes jobs by it: a task that keeps a
//! [`watch`] of the declared models, versions and traffic splits ([`Routes`]) current.
//!
//! Without the registry bucket the snapshot stays empty and nothing is checked (jobs for
//! unannounced models wait `--unknown-model-after-ms`, as before); the task looks for the
//! bucket every few seconds, so seeding a running system takes effect without a restart.
//! Changes are applied one by one onto a copy of the last snapshot, which is then swapped
//! in whole: a reconnect's replay of every key never publishes a partial view, and a job
//! routed by one snapshot never sees half of a write.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routing::Routes;

/// How often to look for the bucket while it does not exist, or after an error.
const RETRY: Duration = Duration::from_secs(2);

/// What the intake reads: the declared models, versions and traffic splits.
pub(crate) type Snapshot = watch::Receiver<Arc<Routes>>;

/// Loads the registry (when it exists) and starts the task that follows it.
pub(crate) async fn start(
    js: async_nats::jetstream::Context,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Snapshot {
    let initial = match Registry::open(&js).await {
        Ok(Some(registry)) => match registry.list().await {
            Ok(stored) => Routes::of(&stored),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the model registry; jobs are not checked against it until it can be read");
                Routes::default()
            }
        },
        Ok(None) => Routes::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the model registry");
            Routes::default()
        }
    };
    tracing::info!(
        declared_models = initial.declared_models(),
        "model registry loaded"
    );
    let (tx, rx) = watch::channel(Arc::new(initial));
    tasks.spawn(follow(js, tx, shutdown));
    rx
}

/// Applies every registry write to the snapshot until `shutdown`.
async fn follow(
    js: async_nats::jetstream::Context,
    tx: watch::Sender<Arc<Routes>>,
    shutdown: CancellationToken,
) {
    // A registry the dispatcher may not read (NATS permissions) fails every retry: say so
    // once at warn, then at debug.
    let mut warned = false;
    let mut failed = |what: &str, e: &dyn std::fmt::Display| {
        if warned {
            tracing::debug!(error = %e, "{what}");
        } else {
            tracing::warn!(error = %e, "{what}; retrying every {}s", RETRY.as_secs());
            warned = true;
        }
    };
    while !shutdown.is_cancelled() {
        match Registry::open(&js).await {
            Ok(Some(registry)) => match registry.changes().await {
                Ok(changes) => {
                    let mut changes = std::pin::pin!(changes);
                    loop {
                        let next = tokio::select! { biased; _ = shutdown.cancelled() => return, c = changes.next() => c };
                        match next {
                            Some(Ok(change)) => {
                                let mut next = (**tx.borrow()).clone();
                                next.apply(change);
                                tx.send_replace(Arc::new(next));
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "model registry entry ignored")
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => failed("cannot watch the model registry", &e),
            },
            Ok(None) => {}
            Err(e) => failed("cannot open the model registry", &e),
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(RETRY) => {} }
    }
}

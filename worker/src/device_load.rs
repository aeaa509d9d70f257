//! How many batches an executor thread (one instance of a model on a device, see
//! `executor.rs`) has been handed and not yet finished. The batchers read it to decide
//! when a batch goes (see `gather.rs`): at once while a thread of the model is idle
//! (waiting for company would only add latency), later while all are busy, so that
//! batches grow with the load. A model with several threads watches the least busy one
//! ([`least_of`]).

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct DeviceLoad(Arc<watch::Sender<usize>>);

impl Default for DeviceLoad {
    fn default() -> Self {
        DeviceLoad(Arc::new(watch::channel(0).0))
    }
}

impl DeviceLoad {
    /// A batch was handed to the device's executor.
    pub fn submitted(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    /// A batch finished (or never reached the executor).
    pub fn finished(&self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Batches in flight on the thread now.
    pub fn current(&self) -> usize {
        *self.0.borrow()
    }

    /// Batches in flight on the thread, with a wake-up on every change.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.0.subscribe()
    }
}

/// The batches in flight on the least busy of `loads`, kept up to date by a small task
/// that ends when the returned receiver (and its clones) are dropped. One load: its own
/// watch, no task. Must be called inside a Tokio runtime.
pub(crate) fn least_of(loads: &[DeviceLoad]) -> watch::Receiver<usize> {
    if let [one] = loads {
        return one.watch();
    }
    let mut inputs: Vec<watch::Receiver<usize>> = loads.iter().map(DeviceLoad::watch).collect();
    let least = |inputs: &mut Vec<watch::Receiver<usize>>| {
        inputs
            .iter_mut()
            .map(|r| *r.borrow_and_update())
            .min()
            .unwrap_or(0)
    };
    let (tx, rx) = watch::channel(least(&mut inputs));
    tokio::spawn(async move {
        loop {
            let changed = {
                let any =
                    futures::future::select_all(inputs.iter_mut().map(|r| Box::pin(r.changed())));
                tokio::select! {
                    _ = tx.closed() => return,
                    (res, _, _) = any => res.is_ok(),
                }
            };
            if !changed {
                return;
            }
            tx.send_replace(least(&mut inputs));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn least_of_follows_the_least_busy_thread() {
        let (a, b) = (DeviceLoad::default(), DeviceLoad::default());
        let mut least = least_of(&[a.clone(), b.clone()]);
        assert_eq!(*least.borrow_and_update(), 0);
        a.submitted();
        b.submitted();
        least.changed().await.unwrap();
        while *least.borrow_and_update() != 1 {
            least.changed().await.unwrap();
        }
        a.finished();
        while *least.borrow_and_update() != 0 {
            least.changed().await.unwrap();
        }
    }
}

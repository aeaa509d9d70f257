//! How many batches a device has been handed and not yet finished. The batchers read it to
//! decide when a batch goes (see `gather.rs`): at once while the device is idle (waiting
//! for company would only add latency), later while it is busy, so that batches grow with
//! the load.

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

    /// Batches in flight on the device, with a wake-up on every change.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.0.subscribe()
    }
}

//! The state a run's tasks share: the in-flight table (job number → priority, intended
//! start) the publishers fill and the notice listener empties, the [`Recorder`], the
//! results still to read, and the counters the progress bar shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jetinfer_client::decode_owned;
use jetinfer_schemas::Status;
use tokio::sync::Semaphore;

use crate::bench::record::Recorder;

/// A published job waiting for its notice.
pub(super) struct Flight {
    pub prio: usize,
    pub start: Instant,
    pub published_ms: u64,
}

/// A result to read: job number, priority, publish wall ms, and whether it is measured.
pub(super) type ToFetch = (u64, usize, u64, bool);

pub(super) struct Shared {
    pub t0: Instant,
    pub wall_t0_ms: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub flights: Mutex<HashMap<u64, Flight>>,
    pub rec: Mutex<Recorder>,
    pub to_fetch: Mutex<Vec<ToFetch>>,
    pub sent: AtomicU64,
    pub done: AtomicU64,
    /// Closed loop: one permit per job allowed in flight.
    pub slots: Option<Arc<Semaphore>>,
}

impl Shared {
    pub fn new(
        t0: Instant,
        wall_t0_ms: u64,
        warmup: Duration,
        duration: Duration,
        slots: Option<Arc<Semaphore>>,
    ) -> Shared {
        Shared {
            t0,
            wall_t0_ms,
            warmup,
            duration,
            flights: Mutex::new(HashMap::new()),
            rec: Mutex::new(Recorder::default()),
            to_fetch: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            slots,
        }
    }

    /// Whether a job started at `start` falls in the measured window.
    pub fn measured(&self, start: Instant) -> bool {
        let at = start.saturating_duration_since(self.t0);
        at >= self.warmup && at < self.duration
    }

    /// Counts a job as finished and, in a closed loop, gives its slot back.
    pub fn finished(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &self.slots {
            s.add_permits(1);
        }
    }
}

/// Adds one stored result to the recorder.
pub(super) fn account(
    rec: &mut Recorder,
    id: &str,
    bytes: &[u8],
    prio: usize,
    published_ms: u64,
    measured: bool,
) {
    let r = match decode_owned(id, bytes) {
        Ok(r) => r,
        Err(_) => {
            *rec.errors.entry("undecodable_result".into()).or_default() += 1;
            return;
        }
    };
    if r.status == Status::Ok {
        rec.ok += 1;
    } else {
        let code = r
            .error
            .as_ref()
            .map(|e| e.code.as_str().to_string())
            .unwrap_or_else(|| r.status.as_str().to_string());
        *rec.errors.entry(code).or_default() += 1;
    }
    if measured {
        if r.timings.batch_size > 0 {
            rec.batch_size_sum += r.timings.batch_size as u64;
            rec.batch_size_n += 1;
            rec.compute_ms_sum += r.timings.compute_ms;
            rec.queued_ms_sum += r.timings.queued_ms;
        }
        if r.completed_at_ms > 0 {
            rec.stored(prio, r.completed_at_ms.saturating_sub(published_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::{encode, JobResult, Timings};

    #[test]
    fn account_counts_statuses_batches_and_stored_latency() {
        let mut rec = Recorder::default();
        let mut r = JobResult::ok("j1", "m", "1", Vec::new());
        r.timings = Timings {
            batch_size: 4,
            ..Timings::default()
        };
        r.completed_at_ms = 1_050;
        account(&mut rec, "j1", &encode(&r), 1, 1_000, true);
        account(&mut rec, "j2", b"not a result", 1, 1_000, true);
        assert_eq!(rec.ok, 1);
        assert_eq!(rec.batch_size_sum, 4);
        assert_eq!(rec.errors.get("undecodable_result"), Some(&1));
        assert_eq!(rec.lat[1].stored_ms.len(), 1);
    }
}

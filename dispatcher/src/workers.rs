//! The worker registry: who is alive (heartbeats), what each serves, and how many of its
//! slots this dispatcher has filled. Pure state, owned by the scheduler actor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetinfer_schemas::worker::Heartbeat;
use tokio_util::sync::CancellationToken;

use crate::queue::Route;

struct WorkerState {
    hb: Heartbeat,
    last_seen: Instant,
    /// Jobs this dispatcher has sent and not yet seen answered.
    in_flight: u32,
    /// Cancelled when the worker is declared dead, so its dispatches give their jobs back.
    gone: CancellationToken,
}

/// A worker chosen for a bundle.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub worker: String,
    /// How many jobs to send: free slots, capped by the model's batch size.
    pub capacity: usize,
    pub gone: CancellationToken,
}

pub(crate) struct Workers {
    workers: HashMap<String, WorkerState>,
    /// Last time any worker announced each (model, version).
    model_seen: HashMap<(String, String), Instant>,
    heartbeat_timeout: Duration,
}

impl Workers {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Workers {
            workers: HashMap::new(),
            model_seen: HashMap::new(),
            heartbeat_timeout,
        }
    }

    pub fn heartbeat(&mut self, hb: Heartbeat, now: Instant) {
        for m in &hb.models {
            self.model_seen
                .insert((m.name.clone(), m.version.clone()), now);
        }
        match self.workers.get_mut(&hb.worker) {
            Some(w) => {
                w.hb = hb;
                w.last_seen = now;
            }
            None => {
                tracing::info!(worker = %hb.worker, models = hb.models.len(), slots = hb.slots, "worker joined");
                let id = hb.worker.clone();
                self.workers.insert(
                    id,
                    WorkerState {
                        hb,
                        last_seen: now,
                        in_flight: 0,
                        gone: CancellationToken::new(),
                    },
                );
            }
        }
    }

    /// Drops workers whose heartbeats stopped; their dispatches are cancelled.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > self.heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            self.remove(id);
        }
        dead
    }

    /// Forgets a worker now (heartbeats stopped, or a request found no responder).
    pub fn remove(&mut self, id: &str) {
        if let Some(w) = self.workers.remove(id) {
            tracing::warn!(worker = %id, in_flight = w.in_flight, "worker gone; its jobs will be dispatched again");
            w.gone.cancel();
        }
    }

    fn serves(hb: &Heartbeat, route: &Route) -> Option<u32> {
        hb.models
            .iter()
            .find(|m| {
                m.name == route.model && route.version.as_ref().is_none_or(|v| *v == m.version)
            })
            .map(|m| m.max_batch_size)
    }

    /// The accepting worker serving `route` with the most free slots.
    pub fn place(&self, route: &Route) -> Option<Placement> {
        self.workers
            .iter()
            .filter(|(_, w)| w.hb.accepting)
            .filter_map(|(id, w)| {
                let batch = Self::serves(&w.hb, route)?;
                let free = w.hb.slots.saturating_sub(w.in_flight);
                (free > 0).then(|| (id, w, free, batch))
            })
            .max_by_key(|(id, _, free, _)| (*free, std::cmp::Reverse(*id)))
            .map(|(id, w, free, batch)| Placement {
                worker: id.clone(),
                capacity: free.min(batch.max(1)) as usize,
                gone: w.gone.clone(),
            })
    }

    pub fn reserve(&mut self, id: &str, n: u32) {
        if let Some(w) = self.workers.get_mut(id) {
            w.in_flight += n;
        }
    }

    pub fn release(&mut self, id: &str, n: u32) {
        if let Some(w) = self.workers.get_mut(id) {
            w.in_flight = w.in_flight.saturating_sub(n);
        }
    }

    /// Whether some worker announced this route within `memory` (a restarting worker's
    /// models stay known for a while, so their jobs wait instead of failing).
    pub fn knows(&self, route: &Route, now: Instant, memory: Duration) -> bool {
        self.model_seen.iter().any(|((name, version), seen)| {
            *name == route.model
                && route.version.as_ref().is_none_or(|v| v == version)
                && now.saturating_duration_since(*seen) <= memory
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::worker::ModelInfo;

    fn hb(id: &str, model: &str, version: &str, slots: u32) -> Heartbeat {
        Heartbeat {
            v: 1,
            worker: id.into(),
            models: vec![ModelInfo {
                name: model.into(),
                version: version.into(),
                max_batch_size: 8,
                inputs: vec![],
            }],
            slots,
            free_slots: slots,
            devices: vec![],
            gpu_memory_bytes: None,
            accepting: true,
            sent_at_ms: 0,
        }
    }

    fn route(m: &str, v: Option<&str>) -> Route {
        Route {
            model: m.into(),
            version: v.map(Into::into),
        }
    }

    #[test]
    fn places_on_the_freest_worker_serving_the_route() {
        let now = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3));
        w.heartbeat(hb("a", "m", "1", 16), now);
        w.heartbeat(hb("b", "m", "2", 16), now);
        w.reserve("a", 10);
        let p = w.place(&route("m", None)).unwrap();
        assert_eq!((p.worker.as_str(), p.capacity), ("b", 8));
        assert_eq!(w.place(&route("m", Some("1"))).unwrap().capacity, 6);
        assert!(w.place(&route("x", None)).is_none());
        w.reserve("a", 6);
        assert!(w.place(&route("m", Some("1"))).is_none(), "no free slots");
        w.release("a", 16);
        assert!(w.place(&route("m", Some("1"))).is_some());
    }

    #[test]
    fn silent_workers_expire_and_cancel_their_dispatches() {
        let t0 = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3));
        w.heartbeat(hb("a", "m", "1", 4), t0);
        let p = w.place(&route("m", None)).unwrap();
        assert!(w.expire(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(w.expire(t0 + Duration::from_secs(4)), vec!["a".to_string()]);
        assert!(p.gone.is_cancelled());
        assert!(w.knows(
            &route("m", None),
            t0 + Duration::from_secs(4),
            Duration::from_secs(10)
        ));
        assert!(!w.knows(
            &route("m", None),
            t0 + Duration::from_secs(20),
            Duration::from_secs(10)
        ));
        assert!(!w.knows(&route("m", Some("9")), t0, Duration::from_secs(10)));
    }
}

//! The worker registry: who is alive (heartbeats), what each serves, and how many of its
//! slots this dispatcher has filled. Pure state, owned by the scheduler actor, which
//! publishes its [`WorkersView`] for the health endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetinfer_schemas::worker::{Heartbeat, ModelInfo};
use tokio_util::sync::CancellationToken;

use jetinfer_schemas::Route;

/// The live workers as the health endpoint shows them: the accepting workers in the
/// registry, ordered by id, each with its last heartbeat.
pub(crate) type WorkersView = Vec<Arc<Heartbeat>>;

struct WorkerState {
    hb: Arc<Heartbeat>,
    last_seen: Instant,
    /// Jobs this dispatcher has sent and not yet seen answered.
    in_flight: u32,
    /// Of those, suspects (jobs that lost a run before): at most one at a time.
    suspects: u32,
    /// When work was last placed on it ([`Workers::placements`] at the time; 0 = never).
    last_placed: u64,
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
    /// How long the worker gets to answer this bundle.
    pub timeout: Duration,
}

/// The shortest bundle timeout, whatever the model's speed (scheduling noise, GC pauses).
const MIN_BUNDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Safety factor over the time the worker's queue should take.
const TIMEOUT_FACTOR: f64 = 4.0;

/// A bundle may wait behind every slot's worth of batches on the worker, then run: allow
/// `TIMEOUT_FACTOR` times that, from the model's announced batch time; until a batch time is
/// known, the configured maximum.
fn bundle_timeout(slots: u32, model: &ModelInfo, max: Duration) -> Duration {
    let Some(batch_ms) = model.batch_ms else {
        return max;
    };
    let batches = (slots as f64 / model.max_batch_size.max(1) as f64).ceil() + 1.0;
    let t = MIN_BUNDLE_TIMEOUT.as_secs_f64() + TIMEOUT_FACTOR * batches * batch_ms / 1e3;
    Duration::from_secs_f64(t).clamp(MIN_BUNDLE_TIMEOUT, max.max(MIN_BUNDLE_TIMEOUT))
}

pub(crate) struct Workers {
    workers: HashMap<String, WorkerState>,
    /// Last time any worker announced each (model, version).
    model_seen: HashMap<(String, String), Instant>,
    /// Last heartbeat of any worker: while nothing is heard (NATS down, pool restarting),
    /// no model can be declared unknown.
    last_heard: Option<Instant>,
    heartbeat_timeout: Duration,
    /// `--dispatch-timeout-ms`: the longest a bundle may take.
    max_bundle_timeout: Duration,
    /// Whether a worker joined, left or sent a heartbeat since the last [`Workers::view`].
    changed: bool,
    /// Bundles placed so far: orders the workers by when they last got work.
    placements: u64,
}

impl Workers {
    pub fn new(heartbeat_timeout: Duration, max_bundle_timeout: Duration) -> Self {
        Workers {
            workers: HashMap::new(),
            model_seen: HashMap::new(),
            last_heard: None,
            heartbeat_timeout,
            max_bundle_timeout,
            changed: false,
            placements: 0,
        }
    }

    /// The accepting workers and their last heartbeats, when anything changed since the
    /// last call.
    pub fn view(&mut self) -> Option<WorkersView> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut view: WorkersView = self
            .workers
            .values()
            .filter(|w| w.hb.accepting)
            .map(|w| w.hb.clone())
            .collect();
        view.sort_by(|a, b| a.worker.cmp(&b.worker));
        Some(view)
    }

    pub fn heartbeat(&mut self, hb: Heartbeat, now: Instant) {
        self.last_heard = Some(now);
        self.changed = true;
        for m in &hb.models {
            self.model_seen
                .insert((m.name.clone(), m.version.clone()), now);
        }
        match self.workers.get_mut(&hb.worker) {
            Some(w) => {
                w.hb = Arc::new(hb);
                w.last_seen = now;
            }
            None => {
                tracing::info!(worker = %hb.worker, models = hb.models.len(), slots = hb.slots, "worker joined");
                let id = hb.worker.clone();
                self.workers.insert(
                    id,
                    WorkerState {
                        hb: Arc::new(hb),
                        last_seen: now,
                        in_flight: 0,
                        suspects: 0,
                        last_placed: 0,
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
            self.changed = true;
            tracing::warn!(worker = %id, in_flight = w.in_flight, "worker gone; its jobs will be dispatched again");
            w.gone.cancel();
        }
    }

    fn serves<'h>(hb: &'h Heartbeat, route: &Route) -> Option<&'h ModelInfo> {
        hb.models
            .iter()
            .find(|m| route.matches(&m.name, &m.version))
    }

    /// The accepting worker serving `route` with the most free slots; among equals, the one
    /// that got work least recently. (At low load every worker is idle at each placement:
    /// without the rotation the first one would get everything and the others never warm
    /// up, nor share a fault's damage.)
    pub fn place(&self, route: &Route) -> Option<Placement> {
        self.workers
            .iter()
            .filter(|(_, w)| w.hb.accepting)
            .filter_map(|(id, w)| {
                let model = Self::serves(&w.hb, route)?;
                let free = w.hb.slots.saturating_sub(w.in_flight);
                (free > 0).then_some((id, w, free, model))
            })
            .max_by_key(|(id, w, free, _)| {
                (
                    *free,
                    std::cmp::Reverse(w.last_placed),
                    std::cmp::Reverse(*id),
                )
            })
            .map(|(id, w, free, model)| Placement {
                worker: id.clone(),
                capacity: free.min(model.max_batch_size.max(1)) as usize,
                gone: w.gone.clone(),
                timeout: bundle_timeout(w.hb.slots, model, self.max_bundle_timeout),
            })
    }

    /// A worker for one suspect job: serving the route, a free slot, and no other suspect
    /// in flight (a suspect that kills its worker takes no other suspect with it).
    pub fn place_suspect(&self, route: &Route) -> Option<Placement> {
        self.workers
            .iter()
            .filter(|(_, w)| w.hb.accepting && w.suspects == 0 && w.hb.slots > w.in_flight)
            .filter_map(|(id, w)| Self::serves(&w.hb, route).map(|m| (id, w, m)))
            .min_by_key(|(id, w, _)| (w.in_flight, *id))
            .map(|(id, w, model)| Placement {
                worker: id.clone(),
                capacity: 1,
                gone: w.gone.clone(),
                timeout: bundle_timeout(w.hb.slots, model, self.max_bundle_timeout),
            })
    }

    pub fn reserve(&mut self, id: &str, n: u32, suspects: u32) {
        if let Some(w) = self.workers.get_mut(id) {
            self.placements += 1;
            w.last_placed = self.placements;
            w.in_flight += n;
            w.suspects += suspects;
        }
    }

    pub fn release(&mut self, id: &str, n: u32, suspects: u32) {
        if let Some(w) = self.workers.get_mut(id) {
            w.in_flight = w.in_flight.saturating_sub(n);
            w.suspects = w.suspects.saturating_sub(suspects);
        }
    }

    /// Whether this route is certainly not served: some worker was heard within `memory`,
    /// and none announced the route in that time. When no worker at all was heard (NATS
    /// outage, whole pool restarting) nothing is declared unknown: the jobs wait.
    pub fn surely_unknown(&self, route: &Route, now: Instant, memory: Duration) -> bool {
        let hearing = self
            .last_heard
            .is_some_and(|t| now.saturating_duration_since(t) <= memory);
        hearing && !self.knows(route, now, memory)
    }

    /// Whether some worker announced this route within `memory` (a restarting worker's
    /// models stay known for a while, so their jobs wait instead of failing).
    pub fn knows(&self, route: &Route, now: Instant, memory: Duration) -> bool {
        self.model_seen.iter().any(|((name, version), seen)| {
            route.matches(name, version) && now.saturating_duration_since(*seen) <= memory
        })
    }
}

/// A heartbeat of a worker serving one model with all its slots free, for unit tests here
/// and in the scheduler's harness.
#[cfg(test)]
pub(crate) fn test_heartbeat(id: &str, model: &str, version: &str, slots: u32) -> Heartbeat {
    Heartbeat {
        v: 1,
        worker: id.into(),
        models: vec![ModelInfo {
            name: model.into(),
            version: version.into(),
            max_batch_size: 8,
            inputs: vec![],
            batch_ms: None,
        }],
        slots,
        free_slots: slots,
        devices: vec![],
        gpu_memory_bytes: None,
        accepting: true,
        sent_at_ms: 0,
        load_errors: Vec::new(),
        load: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &str, v: Option<&str>) -> Route {
        Route {
            model: m.into(),
            version: v.map(Into::into),
        }
    }

    #[test]
    fn places_on_the_freest_worker_serving_the_route() {
        let now = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3), Duration::from_secs(30));
        w.heartbeat(test_heartbeat("a", "m", "1", 16), now);
        w.heartbeat(test_heartbeat("b", "m", "2", 16), now);
        w.reserve("a", 10, 0);
        let p = w.place(&route("m", None)).unwrap();
        assert_eq!((p.worker.as_str(), p.capacity), ("b", 8));
        assert_eq!(w.place(&route("m", Some("1"))).unwrap().capacity, 6);
        assert!(w.place(&route("x", None)).is_none());
        w.reserve("a", 6, 0);
        assert!(w.place(&route("m", Some("1"))).is_none(), "no free slots");
        w.release("a", 16, 0);
        assert!(w.place(&route("m", Some("1"))).is_some());
    }

    #[test]
    fn idle_workers_take_turns() {
        let now = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3), Duration::from_secs(30));
        w.heartbeat(test_heartbeat("a", "m", "1", 16), now);
        w.heartbeat(test_heartbeat("b", "m", "1", 16), now);
        let mut got = Vec::new();
        for _ in 0..4 {
            let p = w.place(&route("m", None)).unwrap();
            // Each bundle is answered before the next arrives: both are idle every time.
            w.reserve(&p.worker, 1, 0);
            w.release(&p.worker, 1, 0);
            got.push(p.worker);
        }
        assert_eq!(got, ["a", "b", "a", "b"]);
    }

    #[test]
    fn one_suspect_per_worker() {
        let now = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3), Duration::from_secs(30));
        w.heartbeat(test_heartbeat("a", "m", "1", 16), now);
        w.heartbeat(test_heartbeat("b", "m", "1", 16), now);
        let first = w.place_suspect(&route("m", None)).unwrap();
        assert_eq!(first.capacity, 1);
        w.reserve(&first.worker, 1, 1);
        let second = w.place_suspect(&route("m", None)).unwrap();
        assert_ne!(second.worker, first.worker);
        w.reserve(&second.worker, 1, 1);
        assert!(
            w.place_suspect(&route("m", None)).is_none(),
            "every worker holds a suspect"
        );
        w.release(&first.worker, 1, 1);
        assert_eq!(
            w.place_suspect(&route("m", None)).unwrap().worker,
            first.worker
        );
    }

    #[test]
    fn bundle_timeout_follows_the_model_batch_time() {
        let mut m = test_heartbeat("a", "m", "1", 16).models.remove(0);
        let max = Duration::from_secs(30);
        assert_eq!(
            bundle_timeout(16, &m, max),
            max,
            "no batch time yet: the maximum"
        );
        m.batch_ms = Some(10.0); // 16 slots / batch 8 = 2 batches ahead, +1 running
        assert_eq!(
            bundle_timeout(16, &m, max),
            Duration::from_secs_f64(2.0 + 4.0 * 3.0 * 0.010)
        );
        m.batch_ms = Some(60_000.0);
        assert_eq!(bundle_timeout(16, &m, max), max, "capped at the maximum");
    }

    #[test]
    fn the_view_lists_accepting_workers_when_something_changed() {
        let now = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3), Duration::from_secs(30));
        assert!(w.view().is_none(), "nothing heard yet");
        w.heartbeat(test_heartbeat("b", "m", "1", 4), now);
        w.heartbeat(test_heartbeat("a", "m", "1", 4), now);
        let mut draining = test_heartbeat("c", "m", "1", 4);
        draining.accepting = false;
        w.heartbeat(draining, now);
        let ids: Vec<String> = w.view().unwrap().iter().map(|h| h.worker.clone()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(w.view().is_none(), "unchanged since the last view");
        w.remove("a");
        assert_eq!(w.view().unwrap().len(), 1);
        w.expire(now + Duration::from_secs(4));
        assert!(w.view().unwrap().is_empty());
    }

    #[test]
    fn silent_workers_expire_and_cancel_their_dispatches() {
        let t0 = Instant::now();
        let mut w = Workers::new(Duration::from_secs(3), Duration::from_secs(30));
        w.heartbeat(test_heartbeat("a", "m", "1", 4), t0);
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
        assert!(w.surely_unknown(&route("x", None), t0, Duration::from_secs(10)));
        // Nobody heard for a while (NATS outage): nothing is declared unknown.
        assert!(!w.surely_unknown(
            &route("x", None),
            t0 + Duration::from_secs(20),
            Duration::from_secs(10)
        ));
    }
}

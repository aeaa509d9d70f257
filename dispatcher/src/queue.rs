//! Ready queues: jobs pulled from JetStream and waiting for a worker, one FIFO per
//! priority and route (model, optional version), ordered across priorities with aging.
//!
//! Pure state, no I/O and no metrics: the scheduler actor owns it, counts what goes in and
//! out, and tests drive it with explicit times.
//!
//! Aging: a job's effective class is `rank - waited / aging`, so a P2 job that has waited
//! two aging periods competes with fresh P0 work and P2 cannot starve under P0 load.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use jetinfer_schemas::Priority;

use jetinfer_schemas::Route;

struct Entry<T> {
    since: Instant,
    item: T,
}

/// The ready queues. `T` is the queued job (a JetStream message handle in production).
pub(crate) struct ReadyQueues<T> {
    by_priority: [HashMap<Route, VecDeque<Entry<T>>>; 3],
    len: usize,
    aging: Duration,
}

impl<T> ReadyQueues<T> {
    pub fn new(aging: Duration) -> Self {
        ReadyQueues {
            by_priority: Default::default(),
            len: 0,
            aging: aging.max(Duration::from_millis(1)),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues a job that arrived at `since` (its original time on a requeue, so it keeps
    /// its place and its aging).
    pub fn push(&mut self, priority: Priority, route: Route, item: T, since: Instant) {
        let q = self.by_priority[priority.rank()].entry(route).or_default();
        // Requeued jobs are older than the queue's tail: keep each FIFO ordered by age.
        let at = q.iter().position(|e| e.since > since).unwrap_or(q.len());
        q.insert(at, Entry { since, item });
        self.len += 1;
    }

    /// Lower is served first: the class rank minus the aging credit of the head job.
    fn score(&self, priority: Priority, since: Instant, now: Instant) -> f64 {
        priority.rank() as f64
            - now.saturating_duration_since(since).as_secs_f64() / self.aging.as_secs_f64()
    }

    /// Routes with waiting jobs, best first (by the best head score of any priority).
    pub fn routes_by_urgency(&self, now: Instant) -> Vec<Route> {
        let mut best: HashMap<&Route, f64> = HashMap::new();
        for p in Priority::ALL {
            for (route, q) in &self.by_priority[p.rank()] {
                if let Some(head) = q.front() {
                    let s = self.score(p, head.since, now);
                    best.entry(route).and_modify(|b| *b = b.min(s)).or_insert(s);
                }
            }
        }
        let mut routes: Vec<(&Route, f64)> = best.into_iter().collect();
        routes.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        routes.into_iter().map(|(r, _)| r.clone()).collect()
    }

    /// Takes up to `n` jobs of one route, always the most urgent head across priorities.
    pub fn take(&mut self, route: &Route, n: usize, now: Instant) -> Vec<(Priority, T, Instant)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let next = Priority::ALL
                .into_iter()
                .filter_map(|p| {
                    self.by_priority[p.rank()]
                        .get(route)
                        .and_then(|q| q.front())
                        .map(|e| (p, self.score(p, e.since, now)))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((p, _)) = next else { break };
            let q = self.by_priority[p.rank()]
                .get_mut(route)
                .expect("route queue exists: this is a bug");
            let e = q.pop_front().expect("head exists: this is a bug");
            if q.is_empty() {
                self.by_priority[p.rank()].remove(route);
            }
            self.len -= 1;
            out.push((p, e.item, e.since));
        }
        out
    }

    /// Removes every job for which `remove` says so (expired, unknown model, shutdown).
    pub fn remove_where(
        &mut self,
        mut remove: impl FnMut(Priority, &Route, &T) -> bool,
    ) -> Vec<(Priority, Route, T)> {
        let mut out = Vec::new();
        for p in Priority::ALL {
            for (route, q) in self.by_priority[p.rank()].iter_mut() {
                let mut keep = VecDeque::with_capacity(q.len());
                for e in q.drain(..) {
                    if remove(p, route, &e.item) {
                        out.push((p, route.clone(), e.item));
                    } else {
                        keep.push_back(e);
                    }
                }
                *q = keep;
            }
            self.by_priority[p.rank()].retain(|_, q| !q.is_empty());
        }
        self.len -= out.len();
        out
    }

    /// Every queued job (for in-progress acks).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.by_priority
            .iter()
            .flat_map(|m| m.values())
            .flat_map(|q| q.iter().map(|e| &e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &str) -> Route {
        Route {
            model: m.into(),
            version: None,
        }
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let t0 = Instant::now();
        let mut q = ReadyQueues::new(Duration::from_secs(10));
        q.push(Priority::P2, route("m"), "p2a", t0);
        q.push(Priority::P2, route("m"), "p2b", t0);
        q.push(
            Priority::P0,
            route("m"),
            "p0",
            t0 + Duration::from_millis(5),
        );
        q.push(
            Priority::P1,
            route("m"),
            "p1",
            t0 + Duration::from_millis(6),
        );
        let got: Vec<_> = q
            .take(&route("m"), 10, t0 + Duration::from_millis(10))
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, vec!["p0", "p1", "p2a", "p2b"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn aging_lets_old_low_priority_jobs_through() {
        let t0 = Instant::now();
        let mut q = ReadyQueues::new(Duration::from_secs(1));
        q.push(Priority::P2, route("m"), "old-p2", t0);
        // 2.5 s later a fresh P0 arrives: the P2 job has aged past it (2 - 2.5 < 0).
        let now = t0 + Duration::from_millis(2500);
        q.push(Priority::P0, route("m"), "new-p0", now);
        let got: Vec<_> = q
            .take(&route("m"), 1, now)
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, vec!["old-p2"]);
    }

    #[test]
    fn routes_are_ordered_by_their_most_urgent_job() {
        let t0 = Instant::now();
        let mut q = ReadyQueues::new(Duration::from_secs(10));
        q.push(Priority::P2, route("a"), 1, t0);
        q.push(Priority::P0, route("b"), 2, t0);
        assert_eq!(q.routes_by_urgency(t0), vec![route("b"), route("a")]);
    }

    #[test]
    fn requeued_jobs_keep_their_place() {
        let t0 = Instant::now();
        let mut q = ReadyQueues::new(Duration::from_secs(10));
        q.push(Priority::P1, route("m"), "new", t0 + Duration::from_secs(1));
        q.push(Priority::P1, route("m"), "requeued", t0);
        let got: Vec<_> = q
            .take(&route("m"), 2, t0)
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, vec!["requeued", "new"]);
    }

    #[test]
    fn remove_where_keeps_counts_right() {
        let t0 = Instant::now();
        let mut q = ReadyQueues::new(Duration::from_secs(10));
        for i in 0..6 {
            q.push(Priority::ALL[i % 3], route("m"), i, t0);
        }
        let removed = q.remove_where(|_, _, &i| i % 2 == 0);
        assert_eq!(removed.len(), 3);
        assert_eq!(q.len(), 3);
        assert_eq!(q.iter().count(), 3);
    }
}

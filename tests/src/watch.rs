//! Watching a fleet's `/metrics` while a fault test restarts or kills its processes: which
//! dispatchers say they schedule (`jetinfer_dispatcher_active`), and the most jobs each
//! worker held at once by its own count (`jetinfer_worker_in_flight_jobs` against
//! `jetinfer_worker_slots`).
//!
//! Processes come back on new ports, so the sampler reads a shared table of
//! `id → metrics address` ([`Fleet`]) that the test updates; an address that does not
//! answer (a process stopping or starting) counts as not active and holding nothing.
//!
//! Two dispatchers "active at once" is only counted when proven: each round samples every
//! dispatcher, then every dispatcher again in the same order. A dispatcher active in both
//! of its samples was active over the whole span between them (one process takes the
//! lease at most once and stops for good when it loses it), and those spans overlap for
//! all dispatchers of a round; so two such dispatchers in one round were active together.
//! A hand-over between two samples is not mistaken for an overlap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How often the fleet is sampled.
const EVERY: Duration = Duration::from_millis(20);
/// How long one request may take before the process counts as not answering.
const ANSWER: Duration = Duration::from_secs(1);

/// The processes to watch, by id: their current metrics addresses.
#[derive(Clone, Default)]
pub struct Fleet {
    dispatchers: Arc<Mutex<BTreeMap<String, String>>>,
    workers: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Fleet {
    pub fn new() -> Self {
        Fleet::default()
    }

    /// Watch dispatcher `id` at `addr` from now on (replacing an earlier address).
    pub fn dispatcher(&self, id: &str, addr: &str) {
        self.dispatchers
            .lock()
            .unwrap()
            .insert(id.to_string(), addr.to_string());
    }

    /// Watch worker `id` at `addr` from now on (replacing an earlier address).
    pub fn worker(&self, id: &str, addr: &str) {
        self.workers
            .lock()
            .unwrap()
            .insert(id.to_string(), addr.to_string());
    }

    /// Starts sampling until [`Watch::finish`].
    pub fn watch(&self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(sample(self.clone(), stop.clone()));
        Watch { stop, task }
    }
}

/// A running sampler.
pub struct Watch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Seen>,
}

impl Watch {
    /// Stops sampling and returns what was seen.
    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the sampler panicked")
    }
}

/// What the sampler saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Sampling rounds.
    pub rounds: u64,
    /// Rounds in which more than one dispatcher was proven active, with their ids.
    pub overlaps: Vec<Vec<String>>,
    /// Rounds in which exactly one dispatcher was proven active.
    pub rounds_one_active: u64,
    /// The longest span with no dispatcher answering active.
    pub longest_without_active: Duration,
    /// Per worker id: the most jobs it held at once, and its slots (the largest seen).
    pub max_in_flight: BTreeMap<String, u64>,
    pub slots: BTreeMap<String, u64>,
}

impl Seen {
    /// Workers that held more jobs than their slots: `(id, held, slots)`.
    pub fn over_slots(&self) -> Vec<(String, u64, u64)> {
        self.max_in_flight
            .iter()
            .filter_map(|(id, &max)| {
                let slots = self.slots.get(id).copied().unwrap_or(0);
                (max > slots).then(|| (id.clone(), max, slots))
            })
            .collect()
    }
}

async fn sample(fleet: Fleet, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut last_active = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let dispatchers: Vec<(String, String)> = fleet
            .dispatchers
            .lock()
            .unwrap()
            .clone()
            .into_iter()
            .collect();
        let workers: Vec<(String, String)> =
            fleet.workers.lock().unwrap().clone().into_iter().collect();
        let mut first = Vec::with_capacity(dispatchers.len());
        for (_, addr) in &dispatchers {
            first.push(active(addr).await);
        }
        for (id, addr) in &workers {
            if let Some(m) = try_get(addr, "/metrics").await.map(|(_, body)| body) {
                let held = metric(&m, "jetinfer_worker_in_flight_jobs") as u64;
                let slots = metric(&m, "jetinfer_worker_slots") as u64;
                let max = seen.max_in_flight.entry(id.clone()).or_default();
                *max = (*max).max(held);
                let s = seen.slots.entry(id.clone()).or_default();
                *s = (*s).max(slots);
            }
        }
        let mut held = Vec::new();
        let mut any = first.iter().any(|a| *a);
        for ((id, addr), was) in dispatchers.iter().zip(first) {
            let is = active(addr).await;
            any |= is;
            if was && is {
                held.push(id.clone());
            }
        }
        seen.rounds += 1;
        match held.len() {
            0 => {}
            1 => seen.rounds_one_active += 1,
            _ => seen.overlaps.push(held),
        }
        if any {
            last_active = Instant::now();
        } else {
            seen.longest_without_active = seen.longest_without_active.max(last_active.elapsed());
        }
        tokio::time::sleep(EVERY).await;
    }
    seen
}

/// Whether the dispatcher at `addr` answers and says it is active.
async fn active(addr: &str) -> bool {
    match try_get(addr, "/metrics").await {
        Some((200, m)) => metric(&m, "jetinfer_dispatcher_active") == 1.0,
        _ => false,
    }
}

/// The value of an unlabelled metric `name` in a scrape, or the sum of its labelled series
/// (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| *n == name || n.starts_with(&format!("{name}{{")))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// `GET path` on `addr` (HTTP/1.1, connection closed after one response): (status, body),
/// or `None` when nothing answers within a second (a process stopped or starting).
pub async fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        Some((status, body.to_string()))
    };
    tokio::time::timeout(ANSWER, attempt).await.ok().flatten()
}

/// Polls `/readyz` of `addr` until `ok` accepts (status, document); panics after `limit`
/// with "`what` within `limit`".
pub async fn wait_readyz(
    addr: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(u16, &serde_json::Value) -> bool,
) {
    let start = Instant::now();
    loop {
        if let Some((status, body)) = try_get(addr, "/readyz").await {
            let doc = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            if ok(status, &doc) {
                return;
            }
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_labelled_series_and_ignores_comments() {
        let text = "# HELP x\njetinfer_dispatcher_active 1\n\
                    jetinfer_worker_in_flight_jobs{model=\"a\"} 3\n\
                    jetinfer_worker_in_flight_jobs{model=\"b\"} 4\n";
        assert_eq!(metric(text, "jetinfer_dispatcher_active"), 1.0);
        assert_eq!(metric(text, "jetinfer_worker_in_flight_jobs"), 7.0);
        assert_eq!(metric(text, "jetinfer_worker_slots"), 0.0);
    }

    #[test]
    fn over_slots_names_the_worker() {
        let mut seen = Seen::default();
        seen.max_in_flight.insert("w0".into(), 64);
        seen.slots.insert("w0".into(), 64);
        seen.max_in_flight.insert("w1".into(), 65);
        seen.slots.insert("w1".into(), 64);
        assert_eq!(seen.over_slots(), vec![("w1".to_string(), 65, 64)]);
    }
}

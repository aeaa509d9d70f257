//! Subject, stream and Redis key names, and the priority classes.

use serde::{Deserialize, Serialize};

/// The one stream that held every priority's jobs before each priority got its own
/// ([`jobs_stream`]). A dispatcher removes it when empty; the bench's Python baseline still
/// consumes this layout.
pub const LEGACY_JOBS_STREAM: &str = "JETINFER_JOBS";
/// Every job subject starts with this.
pub const JOBS_PREFIX: &str = "jetinfer.jobs";
/// What listeners subscribe to for every worker's heartbeat (core NATS): each worker
/// announces itself every second on its own [`heartbeat_subject`], so a server's subject
/// permissions can keep a worker from announcing under another worker's id.
pub const HEARTBEAT_SUBJECT: &str = "jetinfer.workers.*.heartbeat";

/// `jetinfer.workers.<id>.heartbeat`: where worker `id` publishes its heartbeats.
pub fn heartbeat_subject(worker: &str) -> String {
    format!("jetinfer.workers.{worker}.heartbeat")
}

/// The worker id of a heartbeat subject (`None` for any other subject).
pub fn parse_heartbeat_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("jetinfer.workers.")?
        .strip_suffix(".heartbeat")
        .filter(|id| !id.is_empty() && !id.contains('.'))
}
/// The dead-letter stream: jobs that became `poison`, kept for inspection and replay.
pub const DLQ_STREAM: &str = "JETINFER_DLQ";
/// Header names on dead letters.
pub const DLQ_REASON_HEADER: &str = "Jetinfer-Reason";
pub const DLQ_SUBJECT_HEADER: &str = "Jetinfer-Subject";
pub const DLQ_FAILURES_HEADER: &str = "Jetinfer-Failures";

/// `jetinfer.dlq.<model>`: where a poison job is copied.
pub fn dlq_subject(model: &str) -> String {
    format!("jetinfer.dlq.{model}")
}

/// Default prefix of Redis keys.
pub const DEFAULT_KEY_PREFIX: &str = "jetinfer";

/// Priority classes, highest first.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    P0,
    P1,
    P2,
}

impl Priority {
    /// All classes, highest first.
    pub const ALL: [Priority; 3] = [Priority::P0, Priority::P1, Priority::P2];

    /// The subject token (`"p0"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "p0",
            Priority::P1 => "p1",
            Priority::P2 => "p2",
        }
    }

    /// 0 for P0, 1 for P1, 2 for P2.
    pub fn rank(self) -> usize {
        self as usize
    }

    /// Parses `p0`/`P0`/`0`.
    pub fn parse(s: &str) -> Option<Priority> {
        match s.to_ascii_lowercase().trim_start_matches('p') {
            "0" => Some(Priority::P0),
            "1" => Some(Priority::P1),
            "2" => Some(Priority::P2),
            _ => None,
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::parse(s).ok_or_else(|| format!("unknown priority {s:?} (expected p0, p1 or p2)"))
    }
}

/// `jetinfer.jobs.<priority>.<model>`: where a producer publishes a job.
pub fn job_subject(priority: Priority, model: &str) -> String {
    format!("{JOBS_PREFIX}.{}.{model}", priority.as_str())
}

/// `jetinfer.jobs.<priority>.>`: every subject of one priority, in any of its partitions.
pub fn priority_filter(priority: Priority) -> String {
    format!("{JOBS_PREFIX}.{}.>", priority.as_str())
}

/// Splits a job subject into its priority and model token; the partition number that
/// follows the model on partitions other than 0 (`jetinfer.jobs.<p>.<model>.<k>`, see
/// [`crate::partitions`]) is not part of the model.
pub fn parse_job_subject(subject: &str) -> Option<(Priority, &str)> {
    let rest = subject.strip_prefix(JOBS_PREFIX)?.strip_prefix('.')?;
    let (p, model) = rest.split_once('.')?;
    let model = match model.rsplit_once('.') {
        Some((m, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => m,
        _ => model,
    };
    Some((Priority::parse(p).filter(|_| p.starts_with('p'))?, model))
}

/// `jetinfer.done.<id>`: completion notice (core NATS), payload is the result status.
pub fn done_subject(id: &str) -> String {
    joined(&["jetinfer.done.", id])
}

/// Payload of a completion notice that refuses a job instead of announcing its result:
/// another job with the same id and other inputs (or model, or version) owns the result.
pub const DONE_CONFLICT: &str = "conflict";

/// The `Nats-Msg-Id` under which a dead letter of job `id` is published again: JetStream
/// may still remember the original id, and the replay must not be dropped as a duplicate.
pub fn replay_msg_id(id: &str, now_ms: u64) -> String {
    format!("{id}:replay:{now_ms}")
}

/// True when `msg_id` (a message's `Nats-Msg-Id`) may carry job `id`: the id itself, or
/// its replay id (see [`replay_msg_id`]). Any other pairing is refused, so a job cannot be
/// de-duplicated under one id and answered under another.
pub fn msg_id_is_for(msg_id: &str, id: &str) -> bool {
    msg_id == id
        || msg_id
            .strip_prefix(id)
            .and_then(|rest| rest.strip_prefix(":replay:"))
            .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
}

/// The JetStream stream of one priority's jobs: `JETINFER_P0`, `JETINFER_P1`, `JETINFER_P2`.
/// One stream per priority, because JetStream serves each stream on one goroutine with one
/// store lock: a P2 flood fills only its own stream (refused at publish when full) and
/// never queues in front of P0 inside the broker.
pub fn jobs_stream(p: Priority) -> &'static str {
    match p {
        Priority::P0 => "JETINFER_P0",
        Priority::P1 => "JETINFER_P1",
        Priority::P2 => "JETINFER_P2",
    }
}

/// Durable consumer name of a priority (shared by every dispatcher: they split the work).
pub fn consumer_name(p: Priority) -> String {
    format!("jetinfer-dispatch-{}", p.as_str())
}

/// `jetinfer.worker.<worker id>.run`: where the dispatcher sends run requests.
pub fn worker_run_subject(worker_id: &str) -> String {
    joined(&["jetinfer.worker.", worker_id, ".run"])
}

/// The parts one after another, in one allocation of the right size. Per-job keys and
/// subjects are built with it rather than `format!`: building them with `format!` was 2–4 %
/// of each service's samples in the saturated trivial run, mostly formatting machinery.
fn joined(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// Redis key builders under a configurable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_KEY_PREFIX)
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// `<prefix>:result:<id>`
    pub fn result(&self, id: &str) -> String {
        joined(&[&self.prefix, ":result:", id])
    }

    /// `<prefix>:input:<id>`: a job's inputs sent by reference (see
    /// [`crate::inputs_ref`]); deleted by the worker once the result is stored, else expired.
    pub fn input(&self, id: &str) -> String {
        joined(&[&self.prefix, ":input:", id])
    }

    /// `<prefix>:failures:<id>`: how many runs of a job were lost (worker died, timed out,
    /// could not run it); kept in Redis so the count survives dispatcher restarts.
    pub fn failures(&self, id: &str) -> String {
        joined(&[&self.prefix, ":failures:", id])
    }

    /// `<prefix>:executions`: hash of job id → forward runs, written only when a worker
    /// runs with `--record-executions` (the fault suite counts duplicate executions).
    pub fn executions(&self) -> String {
        format!("{}:executions", self.prefix)
    }

    /// `<prefix>:cache:<model>:<version>:<digest>`
    pub fn cache(&self, model: &str, version: &str, digest: &str) -> String {
        joined(&[&self.prefix, ":cache:", model, ":", version, ":", digest])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_subjects_name_their_worker() {
        assert_eq!(
            parse_heartbeat_subject(&heartbeat_subject("w-1")),
            Some("w-1")
        );
        assert_eq!(parse_heartbeat_subject("jetinfer.workers.heartbeat"), None);
        assert_eq!(
            parse_heartbeat_subject("jetinfer.workers.a.b.heartbeat"),
            None
        );
    }

    #[test]
    fn a_msg_id_is_for_its_job_or_its_replay_only() {
        assert!(msg_id_is_for("j1", "j1"));
        assert!(msg_id_is_for(&replay_msg_id("j1", 1_700_000_000_000), "j1"));
        assert!(!msg_id_is_for("j2", "j1"));
        assert!(!msg_id_is_for("j1:replay:", "j1"));
        assert!(!msg_id_is_for("j1:replay:x", "j1"));
        assert!(!msg_id_is_for("j1x", "j1"));
    }

    #[test]
    fn subjects_round_trip() {
        let s = job_subject(Priority::P1, "mlp");
        assert_eq!(s, "jetinfer.jobs.p1.mlp");
        assert_eq!(parse_job_subject(&s), Some((Priority::P1, "mlp")));
        assert_eq!(parse_job_subject("jetinfer.jobs.p7.mlp"), None);
        assert_eq!(parse_job_subject("jetinfer.jobs.1.mlp"), None);
        assert_eq!(parse_job_subject("other.jobs.p1.mlp"), None);
        assert_eq!(
            parse_job_subject("jetinfer.jobs.p2.mlp.3"),
            Some((Priority::P2, "mlp"))
        );
        assert_eq!(priority_filter(Priority::P2), "jetinfer.jobs.p2.>");
    }

    #[test]
    fn keys() {
        let k = Keys::new("x");
        assert_eq!(k.result("a"), "x:result:a");
        assert_eq!(k.cache("m", "1", "ab"), "x:cache:m:1:ab");
        assert_eq!(k.failures("a"), "x:failures:a");
        assert_eq!(k.input("a"), "x:input:a");
        assert_eq!(done_subject("a"), "jetinfer.done.a");
        assert_eq!(worker_run_subject("w-1"), "jetinfer.worker.w-1.run");
        assert_eq!(Keys::default().result("a"), "jetinfer:result:a");
    }

    #[test]
    fn priorities() {
        assert_eq!("P2".parse::<Priority>().unwrap(), Priority::P2);
        assert_eq!(Priority::parse("1"), Some(Priority::P1));
        assert!(Priority::P0 < Priority::P2);
    }
}

//! Dispatcher configuration: every flag also reads an environment variable.

use std::time::Duration;

use jetinfer_schemas::{Limits, Priority};

/// A setting that cannot work, naming its flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A per-priority list flag (`--deadline-ms`, `--in-flight`) without three values.
    #[error("{flag} needs three values (p0,p1,p2)")]
    NotPerPriority { flag: &'static str, got: usize },
    #[error(transparent)]
    Nats(#[from] jetinfer_connect::ConnectError),
}

/// Where JetStream keeps the job stream.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// Configuration of one dispatcher process.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "jetinfer-dispatcher",
    about = "Moves jobs from JetStream priority subjects to jetinfer workers"
)]
pub struct Config {
    /// Where NATS and Redis are.
    #[command(flatten)]
    pub connect: jetinfer_connect::ConnectArgs,
    /// Prefix of every Redis key.
    #[arg(long, env = "JETINFER_KEY_PREFIX", default_value = "jetinfer")]
    pub key_prefix: String,
    /// Name in logs and in results the dispatcher writes itself (default: random).
    #[arg(long, env = "JETINFER_DISPATCHER_ID")]
    pub id: Option<String>,
    /// TTL of results in Redis, seconds.
    #[arg(long, env = "JETINFER_RESULT_TTL_S", default_value_t = 86_400)]
    pub result_ttl_s: u64,
    /// Stream storage.
    #[arg(long, env = "JETINFER_STORAGE", value_enum, default_value = "file")]
    pub storage: Storage,
    /// Stream replicas (1 for a single server).
    #[arg(long, env = "JETINFER_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Most jobs each priority's stream holds; beyond it that priority's producers get an
    /// error (DiscardNew) while the other priorities' streams still accept.
    #[arg(long, env = "JETINFER_STREAM_MAX_MSGS", default_value_t = 1_000_000)]
    pub stream_max_msgs: i64,
    /// Most jobs waiting per subject (one priority and model); beyond it producers of that
    /// subject get an error, so one model's burst cannot fill its priority's stream and
    /// lock the other models out. 0 = no per-subject limit.
    #[arg(
        long,
        env = "JETINFER_STREAM_MAX_MSGS_PER_SUBJECT",
        default_value_t = 250_000
    )]
    pub stream_max_msgs_per_subject: i64,
    /// Most bytes each priority's stream holds (DiscardNew).
    #[arg(long, env = "JETINFER_STREAM_MAX_BYTES", default_value_t = 8 << 30)]
    pub stream_max_bytes: i64,
    /// JetStream de-duplication window for `Nats-Msg-Id`, seconds.
    #[arg(long, env = "JETINFER_DUPLICATE_WINDOW_S", default_value_t = 600)]
    pub duplicate_window_s: u64,
    /// AckWait of the consumers; held jobs get in-progress acks at a third of it.
    #[arg(long, env = "JETINFER_ACK_WAIT_MS", default_value_t = 30_000)]
    pub ack_wait_ms: u64,
    /// Deliveries (including re-dispatches after a worker died) before a job is `poison`.
    #[arg(long, env = "JETINFER_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Default deadline per priority (p0,p1,p2), ms after publish.
    #[arg(long, env = "JETINFER_DEADLINE_MS", value_delimiter = ',', default_values_t = [5_000u64, 30_000, 300_000])]
    pub deadline_ms: Vec<u64>,
    /// A producer's absolute `deadline_ms` is extended by this much, so that a producer
    /// whose clock runs behind ours does not see its jobs expire early. (Jobs without a
    /// deadline use the JetStream timestamp, the server's clock, and need no tolerance.)
    #[arg(
        long,
        env = "JETINFER_CLOCK_SKEW_TOLERANCE_MS",
        default_value_t = 1_000
    )]
    pub clock_skew_tolerance_ms: u64,
    /// Jobs held at once per priority (p0,p1,p2): queued here plus running on workers.
    #[arg(long, env = "JETINFER_IN_FLIGHT", value_delimiter = ',', default_values_t = [64usize, 128, 256])]
    pub in_flight: Vec<usize>,
    /// Waiting this long moves a job up one priority class when choosing what runs next.
    #[arg(long, env = "JETINFER_AGING_MS", default_value_t = 10_000)]
    pub aging_ms: u64,
    /// How long a worker may take to answer a bundle before its jobs are dispatched again.
    #[arg(long, env = "JETINFER_DISPATCH_TIMEOUT_MS", default_value_t = 30_000)]
    pub dispatch_timeout_ms: u64,
    /// A worker silent for this long is dead; its jobs are dispatched again.
    #[arg(long, env = "JETINFER_HEARTBEAT_TIMEOUT_MS", default_value_t = 3_000)]
    pub heartbeat_timeout_ms: u64,
    /// A job whose model no worker has announced for this long gets `unknown_model`
    /// (until then it waits: workers may still be starting).
    #[arg(
        long,
        env = "JETINFER_UNKNOWN_MODEL_AFTER_MS",
        default_value_t = 10_000
    )]
    pub unknown_model_after_ms: u64,
    /// Job limits, the same flags as the workers'.
    #[command(flatten)]
    pub job_limits: jetinfer_connect::LimitsArgs,
    /// Messages pulled from JetStream per request (prefetch), per priority.
    #[arg(long, env = "JETINFER_PULL_BATCH", default_value_t = 32)]
    pub pull_batch: usize,
    /// Intake tasks per priority, pulling from the same consumer and sharing its in-flight
    /// cap: one task decodes and checks every job of its priority, which bounds small-job
    /// rates (tens of thousands per second) on one core.
    #[arg(long, env = "JETINFER_INTAKE_TASKS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub intake_tasks: u16,
    /// Partition streams per priority (1–8): one stream carries ~34,000 small jobs/s on
    /// a 16-core host whatever the GPUs behind it could run; with N, each priority's jobs are
    /// spread over N streams by job id (docs/architecture.md, "Partition streams"). Producers
    /// read N from the streams. Lowering it needs the extra partitions empty.
    #[arg(long, env = "JETINFER_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=jetinfer_schemas::partitions::MAX_PARTITIONS as i64))]
    pub partitions: u16,
    /// How often the autoscaling signals on `/metrics` (queue lag, oldest-job age, arrival
    /// rate, per-model saturation) are refreshed from JetStream, ms; with `--metrics-addr`.
    #[arg(long, env = "JETINFER_AUTOSCALE_EVERY_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub autoscale_every_ms: u64,
    /// The saturation score's backlog term: how many seconds a model's backlog may take
    /// to drain at its measured capacity before the score passes 1 (docs/scale-out.md).
    #[arg(long, env = "JETINFER_AUTOSCALE_DRAIN_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub autoscale_drain_s: u64,
    /// TTL of the dispatcher lease, ms: with more than one dispatcher, only the holder of
    /// the lease schedules; a standby takes over within about this long after the active
    /// one dies (docs/architecture.md, "More than one dispatcher").
    #[arg(long, env = "JETINFER_LEASE_TTL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ttl_ms: u64,
    /// Take the dispatcher lease before scheduling, so that several dispatchers run as one
    /// active and hot standbys (docs/architecture.md, "More than one dispatcher"). Off by
    /// default: a lone dispatcher that loses its lease (NATS restarting longer than 2/3 of
    /// the TTL) exits for its supervisor to restart it, where without the lease it simply
    /// reconnects and carries on.
    #[arg(long, env = "JETINFER_LEASE")]
    pub lease: bool,
    /// Logs, metrics and health endpoint, and `--check-config`.
    #[command(flatten)]
    pub ops: jetinfer_telemetry::OpsArgs,
}

impl Config {
    /// Rejects settings that cannot work, with a message naming the flag.
    pub fn check(&self) -> Result<(), ConfigError> {
        let per_priority = [
            ("--deadline-ms", self.deadline_ms.len()),
            ("--in-flight", self.in_flight.len()),
        ];
        for (flag, got) in per_priority {
            if got != 3 {
                return Err(ConfigError::NotPerPriority { flag, got });
            }
        }
        self.connect.nats().check()?;
        Ok(())
    }

    pub fn default_deadline(&self, p: Priority) -> Duration {
        Duration::from_millis(self.deadline_ms[p.rank()])
    }

    pub fn in_flight_cap(&self, p: Priority) -> usize {
        self.in_flight[p.rank()].max(1)
    }

    /// Jobs held at once over all priorities.
    pub fn in_flight_total(&self) -> usize {
        Priority::ALL.iter().map(|&p| self.in_flight_cap(p)).sum()
    }

    pub fn limits(&self) -> Limits {
        self.job_limits.limits()
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// In-progress acks go out at a third of AckWait, so one lost ack is survivable.
    pub fn progress_every(&self) -> Duration {
        Duration::from_millis((self.ack_wait_ms / 3).max(100))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// The configuration for logs; credentials are hidden by `ConnectArgs`' `Debug`.
    pub fn redacted(&self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_lists() {
        let c = Config::try_parse_from([
            "d",
            "--in-flight",
            "1,2,3",
            "--redis-url",
            "redis://u:pw@h:1",
        ])
        .unwrap();
        assert_eq!(c.in_flight_cap(Priority::P2), 3);
        assert_eq!(c.default_deadline(Priority::P0), Duration::from_secs(5));
        assert!(!c.redacted().contains("pw"));
        assert!(c.check().is_ok());
        let e = Config::try_parse_from(["d", "--in-flight", "1,2"])
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(e.to_string(), "--in-flight needs three values (p0,p1,p2)");
        assert!(matches!(
            e,
            ConfigError::NotPerPriority {
                flag: "--in-flight",
                got: 2
            }
        ));
        let twice =
            Config::try_parse_from(["d", "--nats-url", "nats://u:p@h:1", "--nats-token", "t"])
                .unwrap()
                .check()
                .unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
    }
}

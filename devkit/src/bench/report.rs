//! The benchmark report: per run (pipeline, bare loop, Python baseline) throughput,
//! latency percentiles per priority, batch sizes, errors and CPU; the ceiling; the ratios
//! the performance goals are stated in. Serialised as JSON and printed as a table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::record::{distribution, Percentiles};
use super::run::{Load, RunResult};

/// Latency of one priority in one run.
#[derive(Serialize, Debug, Clone)]
pub struct PriorityReport {
    pub priority: String,
    /// Completions in the measured window per second.
    pub jobs_per_s: f64,
    /// Intended send → completion notice received (result readable in Redis), ms.
    pub latency_ms: Percentiles,
    /// Client publish wall clock → the result's `completed_at_ms`, ms (1 ms resolution).
    pub stored_latency_ms: Percentiles,
    /// (percentile, ms) points of the notice latency, for plots.
    pub distribution: Vec<(f64, f64)>,
}

/// CPU seconds spent by the processes of a run, from /proc.
#[derive(Serialize, Debug, Clone, Default)]
pub struct CpuReport {
    /// The serving side: dispatcher + workers, or the Python worker, or the bare loop
    /// (which runs inside the benchmark process, so it is not separable: null).
    pub service_s: Option<f64>,
    /// nats-server + redis-server.
    pub servers_s: Option<f64>,
    /// Completed jobs per service CPU-second.
    pub jobs_per_service_cpu_s: Option<f64>,
    /// Completed jobs per CPU-second of service and servers together.
    pub jobs_per_total_cpu_s: Option<f64>,
    /// CPU seconds per process (`worker-0`, `dispatcher`, `nats-server`, …, and the load
    /// generator itself, `jetinfer-bench`).
    pub per_process: BTreeMap<String, f64>,
}

/// One measured run.
#[derive(Serialize, Debug, Clone)]
pub struct RunReport {
    /// `jetinfer`, `bare-loop`, `python`, …
    pub system: String,
    pub load: Load,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub publish_errors: u64,
    pub missing: u64,
    pub without_notice: u64,
    /// Completions in the measured window per second, all priorities.
    pub jobs_per_s: f64,
    pub mean_batch_size: Option<f64>,
    pub mean_compute_ms: Option<f64>,
    pub mean_queued_ms: Option<f64>,
    pub all: PriorityReport,
    pub per_priority: Vec<PriorityReport>,
    pub cpu: CpuReport,
    /// Completions per second since the start, per priority (P0, P1, P2).
    pub timeline: Vec<[u64; 3]>,
}

impl RunReport {
    pub fn new(
        system: &str,
        load: Load,
        duration_s: f64,
        warmup_s: f64,
        r: &RunResult,
        cpu: CpuReport,
    ) -> RunReport {
        let rec = &r.rec;
        let window = r.window_s.max(1e-9);
        let per_priority: Vec<PriorityReport> = (0..3)
            .filter(|&p| rec.completed[p] > 0 || rec.window_completed[p] > 0)
            .map(|p| PriorityReport {
                priority: format!("p{p}"),
                jobs_per_s: rec.window_completed[p] as f64 / window,
                latency_ms: Percentiles::of(&rec.lat[p].notice_us, 1e-3),
                stored_latency_ms: Percentiles::of(&rec.lat[p].stored_ms, 1.0),
                distribution: distribution(&rec.lat[p].notice_us, 1e-3),
            })
            .collect();
        let mut notice_all = rec.lat[0].notice_us.clone();
        let mut stored_all = rec.lat[0].stored_ms.clone();
        for p in 1..3 {
            let _ = notice_all.add(&rec.lat[p].notice_us);
            let _ = stored_all.add(&rec.lat[p].stored_ms);
        }
        let total_window: u64 = rec.window_completed.iter().sum();
        let all = PriorityReport {
            priority: "all".into(),
            jobs_per_s: total_window as f64 / window,
            latency_ms: Percentiles::of(&notice_all, 1e-3),
            stored_latency_ms: Percentiles::of(&stored_all, 1.0),
            distribution: distribution(&notice_all, 1e-3),
        };
        let n = rec.batch_size_n as f64;
        let mean = |sum: f64| (rec.batch_size_n > 0).then(|| sum / n);
        RunReport {
            system: system.into(),
            load,
            duration_s,
            warmup_s,
            sent: r.sent,
            ok: rec.ok,
            errors: rec.errors.clone(),
            publish_errors: rec.publish_errors,
            missing: r.missing,
            without_notice: r.without_notice,
            jobs_per_s: all.jobs_per_s,
            mean_batch_size: mean(rec.batch_size_sum as f64),
            mean_compute_ms: mean(rec.compute_ms_sum),
            mean_queued_ms: mean(rec.queued_ms_sum),
            all,
            per_priority,
            cpu,
            timeline: rec.per_second.clone(),
        }
    }

    /// The run as table rows (one per priority, then all).
    pub fn print(&self) {
        println!(
            "{}: {:.1} jobs/s, sent {}, ok {}, errors {:?}, publish errors {}, missing {}, mean batch {}, mean compute {} ms",
            self.system,
            self.jobs_per_s,
            self.sent,
            self.ok,
            self.errors,
            self.publish_errors,
            self.missing,
            self.mean_batch_size.map_or("-".into(), |b| format!("{b:.1}")),
            self.mean_compute_ms.map_or("-".into(), |b| format!("{b:.2}")),
        );
        println!(
            "  {:<4} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "prio", "jobs/s", "n", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for p in self.per_priority.iter().chain(std::iter::once(&self.all)) {
            let l = &p.latency_ms;
            println!(
                "  {:<4} {:>9.1} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                p.priority, p.jobs_per_s, l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        if let Some(s) = self.cpu.service_s {
            println!(
                "  cpu: service {s:.2} s, servers {} s, jobs per service cpu-s {}",
                self.cpu.servers_s.map_or("-".into(), |v| format!("{v:.2}")),
                self.cpu
                    .jobs_per_service_cpu_s
                    .map_or("-".into(), |v| format!("{v:.0}")),
            );
        }
        if !self.cpu.per_process.is_empty() {
            let parts: Vec<String> = self
                .cpu
                .per_process
                .iter()
                .map(|(n, s)| format!("{n} {s:.2}"))
                .collect();
            println!("  cpu-s per process: {}", parts.join(", "));
        }
    }
}

/// The whole benchmark's output.
#[derive(Serialize, Debug, Clone, Default)]
pub struct BenchReport {
    pub label: String,
    pub model: String,
    /// Stream storage (file or memory) and replicas, as the issue asks every figure to say.
    pub storage: String,
    pub replicas: u32,
    pub host: String,
    pub runs: Vec<RunReport>,
    /// What `jetinfer-worker ceiling` printed.
    pub ceiling: Option<serde_json::Value>,
    /// Named ratios: `jetinfer/ceiling`, `jetinfer/bare-loop`, `added_p50_ms`, …
    pub ratios: BTreeMap<String, f64>,
}

impl BenchReport {
    /// Fills [`BenchReport::ratios`] from the runs and the ceiling.
    pub fn compute_ratios(&mut self) {
        let find = |name: &str| self.runs.iter().find(|r| r.system == name);
        let mut ratios = BTreeMap::new();
        let ceiling = self
            .ceiling
            .as_ref()
            .and_then(|c| c.get("jobs_per_s"))
            .and_then(|v| v.as_f64());
        for r in &self.runs {
            if let Some(c) = ceiling.filter(|&c| c > 0.0) {
                ratios.insert(format!("{}/ceiling", r.system), r.jobs_per_s / c);
            }
        }
        // jetinfer against each bare reference in the run.
        for bare in ["bare-loop", "bare-relay"] {
            let (Some(p), Some(b)) = (find("jetinfer"), find(bare)) else {
                continue;
            };
            if b.jobs_per_s > 0.0 {
                ratios.insert(
                    format!("jetinfer/{bare} jobs_per_s"),
                    p.jobs_per_s / b.jobs_per_s,
                );
            }
            let (pl, bl) = (&p.all.latency_ms, &b.all.latency_ms);
            ratios.insert(format!("added_p50_ms over {bare}"), pl.p50 - bl.p50);
            ratios.insert(format!("added_p99_ms over {bare}"), pl.p99 - bl.p99);
        }
        // Each system's jobs per service CPU-second against the Python baseline's.
        if let Some(py) = find("python").and_then(|py| py.cpu.jobs_per_service_cpu_s) {
            for r in self
                .runs
                .iter()
                .filter(|r| r.system != "python" && r.system != "jetinfer")
            {
                if let Some(a) = r.cpu.jobs_per_service_cpu_s {
                    ratios.insert(
                        format!("{}/python jobs_per_service_cpu_s", r.system),
                        a / py,
                    );
                }
            }
        }
        if let (Some(p), Some(py)) = (find("jetinfer"), find("python")) {
            if py.jobs_per_s > 0.0 {
                ratios.insert(
                    "jetinfer/python jobs_per_s".into(),
                    p.jobs_per_s / py.jobs_per_s,
                );
            }
            if let (Some(a), Some(b)) =
                (p.cpu.jobs_per_service_cpu_s, py.cpu.jobs_per_service_cpu_s)
            {
                ratios.insert("jetinfer/python jobs_per_service_cpu_s".into(), a / b);
            }
            ratios.insert(
                "jetinfer p99_ms - python p99_ms".into(),
                p.all.latency_ms.p99 - py.all.latency_ms.p99,
            );
        }
        self.ratios = ratios;
    }
}

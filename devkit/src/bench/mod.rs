//! The load generator and measurements behind `jetinfer bench`.
//!
//! - [`payload`]: job inputs from a model's input spec in the models TOML.
//! - [`run`]: one measured run — open loop (fixed or Poisson arrivals per priority) or
//!   closed loop (N in flight) — timing each job from its intended send to its completion
//!   notice, and reading its result for batch size and status.
//! - [`record`]: HdrHistograms per priority, completions per second, errors.
//! - [`bare`]: the bare JetStream publish → pull → ack → Redis SET loop to compare with.
//! - [`report`]: the JSON report, its table, and the ratios the goals are stated in.
//! - [`svg`]: the plot (latency by percentile, throughput over time).
//! - [`cpu_seconds`]: CPU time of a process from /proc, for jobs per CPU-second.

pub mod bare;
pub mod payload;
pub mod record;
pub mod report;
pub mod run;
pub mod svg;

/// What can stop a benchmark before it measures anything.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

/// User + system CPU seconds a process (and its reaped children) has used so far, or
/// `None` when /proc has no such process (ended, or not Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14–17, i.e. 11–14 after the name.
    let ticks: u64 = f
        .get(11..15)?
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = super::cpu_seconds(std::process::id()).expect("/proc/self/stat");
        assert!(s >= 0.0);
        assert!(super::cpu_seconds(u32::MAX).is_none());
    }
}

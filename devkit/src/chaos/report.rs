//! The figures of one scenario, and the table they print as.

use std::collections::BTreeMap;
use std::time::Duration;

use jetinfer_schemas::{JobResult, Status};
use serde::Serialize;

use super::check::{Check, Fault};
use super::env::Env;
use super::load::Published;
use super::ChaosError;
use crate::golden::compare;

/// Tolerances of the CPU f32 models.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-3;

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub case: u32,
    pub name: String,
    /// Load jobs JetStream acknowledged.
    pub published: usize,
    /// Of those, how many have a result.
    pub completed: usize,
    /// Acknowledged but without a result after the recovery window.
    pub lost: usize,
    /// Load jobs whose forward ran more than once.
    pub duplicates: usize,
    /// Results that are not `ok` or differ from PyTorch's output.
    pub wrong: usize,
    /// Error codes among the load jobs' results.
    pub errors: BTreeMap<String, usize>,
    /// Latency (result completed − publish) of jobs published during the fault window.
    pub fault_p50_ms: f64,
    pub fault_p99_ms: f64,
    /// p99 latency of the P0 jobs published in the fault window.
    pub fault_p0_p99_ms: f64,
    /// From the end of the fault until every job published before that end had completed.
    pub recovery_ms: f64,
    /// Checks particular to the scenario.
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.wrong == 0 && self.checks.iter().all(|c| c.ok)
    }

    /// The column header of [`Report::row`].
    pub fn header() -> String {
        format!(
            "{:>4}  {:<58} {:>9} {:>9} {:>5} {:>5} {:>5} {:>9} {:>9} {:>10}  {}",
            "case",
            "scenario",
            "published",
            "completed",
            "lost",
            "dup",
            "wrong",
            "p50 ms",
            "p99 ms",
            "recover ms",
            "result"
        )
    }

    pub fn row(&self) -> String {
        format!(
            "{:>4}  {:<58} {:>9} {:>9} {:>5} {:>5} {:>5} {:>9.0} {:>9.0} {:>10.0}  {}",
            self.case,
            self.name,
            self.published,
            self.completed,
            self.lost,
            self.duplicates,
            self.wrong,
            self.fault_p50_ms,
            self.fault_p99_ms,
            self.recovery_ms,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Waits up to `settle` for every acknowledged job's result, then computes the figures.
pub(crate) async fn measure(
    case: u32,
    name: &str,
    env: &mut Env,
    published: &[Published],
    fault: &Fault,
    settle: Duration,
) -> Result<Report, ChaosError> {
    let acked: Vec<&Published> = published.iter().filter(|p| p.acked).collect();
    let ids: Vec<String> = acked.iter().map(|p| p.id.clone()).collect();
    let results = wait_for_results(case, env, &ids, settle).await?;
    let store = env.client.store();

    let mut wrong = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for p in &acked {
        let Some(r) = results.get(&p.id) else {
            continue;
        };
        if let Some(code) = r.error_code() {
            *errors.entry(code.as_str().to_string()).or_default() += 1;
        }
        if r.status != Status::Ok
            || compare(&env.samples[p.sample].outputs, &r.outputs, ATOL, RTOL).is_err()
        {
            wrong += 1;
        }
    }
    let executions = store.executions().await?;
    let duplicates = ids
        .iter()
        .filter(|id| executions.get(*id).is_some_and(|&n| n > 1))
        .count();

    // The fault window: at least two seconds, for faults that are a single instant.
    let window_end = fault.end_ms.max(fault.start_ms + 2_000);
    let mut in_window: Vec<f64> = Vec::new();
    let mut p0_in_window: Vec<f64> = Vec::new();
    let mut recovery_ms: f64 = 0.0;
    for p in &acked {
        let Some(r) = results.get(&p.id) else {
            continue;
        };
        if p.publish_ms >= fault.start_ms && p.publish_ms <= window_end {
            let latency = r.completed_at_ms.saturating_sub(p.publish_ms) as f64;
            in_window.push(latency);
            if p.priority == jetinfer_schemas::Priority::P0 {
                p0_in_window.push(latency);
            }
        }
        if p.publish_ms <= fault.end_ms {
            recovery_ms = recovery_ms.max(r.completed_at_ms.saturating_sub(fault.end_ms) as f64);
        }
    }
    in_window.sort_by(f64::total_cmp);
    p0_in_window.sort_by(f64::total_cmp);
    Ok(Report {
        case,
        name: name.to_string(),
        published: acked.len(),
        completed: results.len(),
        lost: acked.len() - results.len(),
        duplicates,
        wrong,
        errors,
        fault_p50_ms: percentile(&in_window, 0.50),
        fault_p99_ms: percentile(&in_window, 0.99),
        fault_p0_p99_ms: percentile(&p0_in_window, 0.99),
        recovery_ms,
        checks: Vec::new(),
    })
}

/// Polls the results of `ids` until all are there or `settle` passes, replacing dead
/// workers meanwhile in the poison cases.
async fn wait_for_results(
    case: u32,
    env: &mut Env,
    ids: &[String],
    settle: Duration,
) -> Result<BTreeMap<String, JobResult<'static>>, ChaosError> {
    let client = env.client.clone();
    let store = client.store();
    let deadline = tokio::time::Instant::now() + settle;
    let mut results = BTreeMap::new();
    loop {
        if matches!(case, 11 | 12) {
            // Workers that died of the poison job are replaced for as long as we wait.
            env.supervise(2)?;
        }
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !results.contains_key(*id))
            .cloned()
            .collect();
        for chunk in missing.chunks(500) {
            if let Ok(got) = store.get_many(chunk).await {
                for (id, r) in chunk.iter().zip(got) {
                    if let Some(r) = r {
                        results.insert(id.clone(), r);
                    }
                }
            }
        }
        if results.len() == ids.len() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(results)
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.5), 50.0);
        assert_eq!(super::percentile(&v, 0.99), 99.0);
        assert_eq!(super::percentile(&[], 0.5), 0.0);
    }
}

//! Faults of load and time: deadlines passing in the queue, a P2 burst against a full
//! stream, a P0 flood against a P2 trickle, and a producer with a skewed clock.

use std::time::Duration;

use jetinfer_schemas::{now_ms, Job, Priority, Status};

use super::{wait_for, worker};
use crate::chaos::check::{check, Check};
use crate::chaos::env::Env;
use crate::chaos::load::burst;
use crate::chaos::ChaosError;

/// Jobs whose deadline passes while every worker is paused get `expired` and never run.
pub(super) async fn deadlines_pass(
    env: &mut Env,
    checks: &mut Vec<Check>,
) -> Result<(), ChaosError> {
    for i in 0..env.stack.workers().len() {
        worker(env, i)?.pause();
    }
    let ids: Vec<String> = (0..20)
        .map(|i| format!("late-{:06x}-{i}", rand::random::<u32>() & 0xff_ffff))
        .collect();
    for id in &ids {
        let mut job = Job::new(id.clone(), "mlp", env.samples[0].inputs.clone());
        job.deadline_ms = Some(now_ms() + 300);
        env.client.submit(Priority::P0, &job).await?;
    }
    // Past the deadline plus the dispatcher's 1 s clock-skew tolerance.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for i in 0..env.stack.workers().len() {
        worker(env, i)?.resume();
    }
    let results = wait_for(env, &ids, Duration::from_secs(20)).await;
    let expired = results
        .iter()
        .filter(|r| r.status == Status::Expired && r.timings.batch_size == 0)
        .count();
    checks.push(check(
        format!(
            "{expired}/{} queued jobs past their deadline got `expired` without running",
            ids.len()
        ),
        expired == ids.len(),
    ));
    Ok(())
}

/// P2 burst of 10,000 jobs against a stream limited to 3,000: producers get a clear
/// "stream full" error, the dispatcher's memory stays bounded, P0 keeps its bound, and every
/// accepted job completes.
pub(super) async fn p2_burst(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let prefix = format!("burst-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let b = burst(&env.client, &env.samples, 10_000, Priority::P2, &prefix).await;
    let clear = b
        .first_refusal
        .as_deref()
        .is_some_and(|e| e.contains("maximum messages"));
    checks.push(check(
        format!(
            "{} of 10000 burst jobs refused with a clear error ({:?})",
            b.refused,
            b.first_refusal.as_deref().unwrap_or("none")
        ),
        b.refused > 0 && clear,
    ));
    let ids: Vec<String> = b.accepted.iter().map(|(id, _)| id.clone()).collect();
    let results = wait_for(env, &ids, Duration::from_secs(120)).await;
    let ok = results.iter().filter(|r| r.status == Status::Ok).count();
    checks.push(check(
        format!("{ok}/{} accepted burst jobs completed ok", ids.len()),
        ok == ids.len(),
    ));
    let pid = env.stack.dispatcher().map(|d| d.pid()).unwrap_or(0);
    let peak_kb = peak_rss_kb(pid).unwrap_or(u64::MAX);
    checks.push(check(
        format!(
            "dispatcher peak RSS {} MiB (bound: 256 MiB)",
            peak_kb / 1024
        ),
        peak_kb < 256 * 1024,
    ));
    Ok(())
}

/// P0 floods the pool (`flood` jobs at once, more than the workers' slots can hold) while
/// P2 trickles in at 10 jobs/s: with aging (1 s per class here) every P2 job finishes within
/// a few seconds, long before the flood drains.
pub(super) async fn p0_saturation(
    env: &mut Env,
    flood: usize,
    checks: &mut Vec<Check>,
) -> Result<(), ChaosError> {
    let prefix = format!("flood-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let client = env.client.clone();
    let samples = env.samples.clone();
    let flood =
        tokio::spawn(async move { burst(&client, &samples, flood, Priority::P0, &prefix).await });
    let mut trickle = Vec::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = format!("trickle-{:06x}-{i}", rand::random::<u32>() & 0xff_ffff);
        let mut job = Job::new(
            id.clone(),
            "mlp",
            env.samples[i % env.samples.len()].inputs.clone(),
        );
        job.cache = Some(false);
        env.client.submit(Priority::P2, &job).await?;
        trickle.push((id, now_ms()));
    }
    let flood = flood.await?;
    let ids: Vec<String> = trickle.iter().map(|(id, _)| id.clone()).collect();
    let p2 = wait_for(env, &ids, Duration::from_secs(60)).await;
    let worst = trickle
        .iter()
        .filter_map(|(id, at)| {
            p2.iter()
                .find(|r| &r.id == id)
                .map(|r| r.completed_at_ms.saturating_sub(*at))
        })
        .max()
        .unwrap_or(u64::MAX);
    let flood_ids: Vec<String> = flood.accepted.iter().map(|(id, _)| id.clone()).collect();
    let flood_results = wait_for(env, &flood_ids, Duration::from_secs(120)).await;
    let flood_end = flood_results
        .iter()
        .map(|r| r.completed_at_ms)
        .max()
        .unwrap_or(0);
    let flood_start = flood.accepted.iter().map(|(_, at)| *at).min().unwrap_or(0);
    // Aging bounds a P2 job's wait relative to the other work waiting with it: with the pool
    // saturated by P0 alone, about two aging periods (2 s here); when the steady load is
    // itself beyond capacity (the long version on a small machine), P2 waits like the P1
    // jobs beside it. Either way it must not starve until the flood is gone.
    let drain = flood_end.saturating_sub(flood_start);
    checks.push(check(
        format!("{}/20 P2 jobs done, slowest in {worst} ms, under a P0 flood that took {drain} ms to drain", p2.len()),
        p2.len() == 20 && worst < (drain / 4).max(6_000),
    ));
    checks.push(check(
        format!(
            "{}/{} flood jobs completed",
            flood_results.len(),
            flood_ids.len()
        ),
        flood_results.len() == flood_ids.len(),
    ));
    Ok(())
}

/// Peak resident memory of a process (VmHWM), KiB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A producer whose clock runs 20 s behind sets a deadline 5 s ahead of its own clock:
/// 15 s in the past by ours. Within the tolerance configured here (30 s), so the jobs run.
/// (Tolerance and skew are large so that a backlog from the steady load cannot expire the
/// jobs for real.)
pub(super) async fn skewed_producer(
    env: &mut Env,
    checks: &mut Vec<Check>,
) -> Result<(), ChaosError> {
    let ids: Vec<String> = (0..50)
        .map(|i| format!("skew-{:06x}-{i}", rand::random::<u32>() & 0xff_ffff))
        .collect();
    for id in &ids {
        let mut job = Job::new(id.clone(), "mlp", env.samples[0].inputs.clone());
        job.deadline_ms = Some(now_ms() - 15_000);
        job.cache = Some(false);
        env.client.submit(Priority::P0, &job).await?;
    }
    let results = wait_for(env, &ids, Duration::from_secs(20)).await;
    let ok = results.iter().filter(|r| r.status == Status::Ok).count();
    checks.push(check(
        format!(
            "{ok}/{} jobs from a producer 20 s behind ran (none expired wrongly)",
            ids.len()
        ),
        ok == ids.len(),
    ));
    Ok(())
}

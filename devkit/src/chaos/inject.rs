//! The faults, one per scenario, and the checks particular to each.

use std::time::Duration;

use jetinfer_schemas::{now_ms, ErrorCode, Job, JobResult, Priority, Status, Tensor};

use super::env::Env;
use super::{ChaosError, ChaosOptions};

/// First input value that makes an injected sticky CUDA error (case 11).
pub(crate) const POISON_STICKY: f32 = -777.0;
/// First input value that makes an injected hang (case 12).
pub(crate) const POISON_HANG: f32 = -555.0;

/// A check particular to one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
}

fn check(what: impl Into<String>, ok: bool) -> Check {
    Check {
        what: what.into(),
        ok,
    }
}

/// When the fault began and ended (Unix ms), and the scenario's own checks.
pub(crate) struct Fault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub checks: Vec<Check>,
}

pub(crate) async fn inject(
    case: u32,
    env: &mut Env,
    opts: &ChaosOptions,
) -> Result<Fault, ChaosError> {
    let start_ms = now_ms();
    let mut checks = Vec::new();
    let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
    match case {
        1 => worker(env, 0)?.kill(),
        2 => {
            // worker-1 aborts by itself after its 10th stored batch.
            let w = worker(env, 1)?;
            let status = w.wait_exit_async(Duration::from_secs(30)).await;
            checks.push(check(
                "worker-1 crashed between storing results and replying",
                status.is_some(),
            ));
        }
        3 => {
            worker(env, 0)?.pause();
            sleep(5_000).await;
            worker(env, 0)?.resume();
        }
        4 => {
            worker(env, 0)?.pause();
            sleep(1_000).await;
            worker(env, 0)?.resume();
        }
        5 => {
            env.stack
                .dispatcher()
                .ok_or_else(|| ChaosError::Setup("no dispatcher".into()))?
                .kill();
            sleep(1_000).await;
            env.stack.start_dispatcher(Vec::<String>::new())?;
        }
        6 => {
            env.nats.kill();
            sleep(2_000).await;
            env.nats.restart()?;
        }
        7 => {
            env.redis.pause();
            tokio::time::sleep(opts.redis_outage).await;
            env.redis.resume();
        }
        8 => {
            env.redis.kill();
            sleep(1_000).await;
            env.redis.restart()?;
        }
        9 => rolling_restart(env, &mut checks).await?,
        10 => {} // active for the whole run
        11 | 12 => poison(case, env, &mut checks).await?,
        13 => bad_checksum(env, &mut checks).await?,
        16 => deadlines_pass(env, &mut checks).await?,
        14 => p2_burst(env, &mut checks).await?,
        15 => p0_saturation(env, (opts.jobs * 20).min(15_000), &mut checks).await?,
        17 => skewed_producer(env, &mut checks).await?,
        _ => {}
    }
    let end_ms = if case == 10 { start_ms + 1 } else { now_ms() };
    Ok(Fault {
        start_ms,
        end_ms,
        checks,
    })
}

fn worker(env: &mut Env, i: usize) -> Result<&mut crate::local::Process, ChaosError> {
    let id = format!("worker-{i}");
    env.stack
        .worker(&id)
        .ok_or_else(|| ChaosError::Setup(format!("no {id}")))
}

/// SIGTERM every worker in turn, each replaced first, as a deployment would.
async fn rolling_restart(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let old = env.stack.workers().len();
    for i in 0..old {
        env.stack.start_worker(Vec::<String>::new())?;
        crate::local::wait_for_workers(
            &env.stack.connect_nats().await?,
            2,
            Duration::from_secs(60),
        )
        .await?;
        let w = worker(env, i)?;
        w.terminate();
        let status = w.wait_exit_async(Duration::from_secs(30)).await;
        checks.push(check(
            format!("worker-{i} drained and exited 0 on SIGTERM"),
            status.is_some_and(|s| s.success()),
        ));
    }
    Ok(())
}

/// One job that takes down whichever worker runs it; the suite restarts workers (as a
/// supervisor would) until the job is answered `poison` and dead-lettered.
async fn poison(case: u32, env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let value = if case == 11 {
        POISON_STICKY
    } else {
        POISON_HANG
    };
    let id = format!("poison{case}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut inputs = env.samples[0].inputs.clone();
    let mut values = inputs[0].to_f32_vec();
    values[0] = value;
    inputs[0] = Tensor::from_f32(inputs[0].shape.clone(), &values);
    env.client
        .submit(Priority::P1, &Job::new(id.clone(), "mlp", inputs))
        .await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut crashes = Vec::new();
    let result = loop {
        if let Some(r) = env.client.get(&id).await.ok().flatten() {
            break Some(r);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        // Supervise: replace workers that died.
        let mut running = 0;
        for w in env.stack.workers() {
            match w.exit_status() {
                Some(status) if !crashes.iter().any(|(name, _)| name == w.name()) => {
                    crashes.push((w.name().to_string(), status))
                }
                Some(_) => {}
                None => running += 1,
            }
        }
        for _ in running..2 {
            env.stack.start_worker(Vec::<String>::new())?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let code = result.as_ref().and_then(JobResult::error_code);
    checks.push(check(
        format!("poison job answered `poison` (got {code:?})"),
        code == Some(ErrorCode::Poison),
    ));
    let expected_exit = if case == 11 {
        "non-zero"
    } else {
        "3 (watchdog)"
    };
    let exits_ok = !crashes.is_empty()
        && crashes.iter().all(|(_, s)| {
            if case == 11 {
                !s.success()
            } else {
                s.code() == Some(3)
            }
        });
    checks.push(check(
        format!(
            "{} worker crash(es), each exit {expected_exit}",
            crashes.len()
        ),
        exits_ok,
    ));
    let js = async_nats::jetstream::new(env.stack.connect_nats().await?);
    let letters = jetinfer_client::dlq::dead_letters(&js)
        .await
        .unwrap_or_default();
    let in_dlq = letters.iter().any(|l| l.id == id);
    checks.push(check(
        format!(
            "poison job copied to JETINFER_DLQ ({} dead letter(s) in all)",
            letters.len()
        ),
        in_dlq,
    ));
    Ok(())
}

/// Jobs for the model whose checksum failed wait, then get `unknown_model`; the worker
/// says why and serves its other models.
async fn bad_checksum(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let golden = crate::golden::Golden::load(crate::local::repo_root()?.join("models/out"))
        .map_err(|e| ChaosError::Setup(e.to_string()))?;
    let pair = golden.samples("pair");
    let ids: Vec<String> = (0..10)
        .map(|i| format!("badsha-{:06x}-{i}", rand::random::<u32>() & 0xff_ffff))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        env.client
            .submit(
                Priority::P1,
                &Job::new(id.clone(), "pair", pair[i].inputs.clone()),
            )
            .await?;
    }
    let results = wait_for(env, &ids, Duration::from_secs(20)).await;
    let all_unknown = results.len() == ids.len()
        && results
            .iter()
            .all(|r| r.error_code() == Some(ErrorCode::UnknownModel));
    checks.push(check(
        format!(
            "{}/{} jobs for the refused model got unknown_model",
            results.len(),
            ids.len()
        ),
        all_unknown,
    ));
    let log = worker(env, 0)?.log();
    checks.push(check(
        "worker log names the sha256 mismatch",
        log.contains("sha256 mismatch"),
    ));
    Ok(())
}

/// Jobs whose deadline passes while every worker is paused get `expired` and never run.
async fn deadlines_pass(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
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
async fn p2_burst(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let prefix = format!("burst-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let b = super::load::burst(&env.client, &env.samples, 10_000, Priority::P2, &prefix).await;
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
async fn p0_saturation(
    env: &mut Env,
    flood: usize,
    checks: &mut Vec<Check>,
) -> Result<(), ChaosError> {
    let prefix = format!("flood-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let client = env.client.clone();
    let samples = env.samples.clone();
    let flood = tokio::spawn(async move {
        super::load::burst(&client, &samples, flood, Priority::P0, &prefix).await
    });
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
    let flood = flood.await.map_err(|e| ChaosError::Setup(e.to_string()))?;
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
async fn skewed_producer(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
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

async fn wait_for(env: &Env, ids: &[String], timeout: Duration) -> Vec<JobResult<'static>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got: Vec<JobResult<'static>> = env
            .client
            .store()
            .get_many(ids)
            .await
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        if got.len() == ids.len() || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

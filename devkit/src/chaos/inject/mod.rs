//! The faults, one per scenario: process faults here, poison jobs in [`poison`], load and
//! clock faults in [`pressure`].

mod poison;
mod pressure;

use std::time::Duration;

use jetinfer_schemas::{now_ms, JobResult};

use super::check::{check, Check, Fault};
use super::env::Env;
use super::{ChaosError, ChaosOptions};

/// Injects scenario `case`'s fault and runs its checks.
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
                .ok_or_else(|| ChaosError::NoProcess("dispatcher".into()))?
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
        11 | 12 => poison::poison(case, env, &mut checks).await?,
        13 => poison::bad_checksum(env, &mut checks).await?,
        16 => pressure::deadlines_pass(env, &mut checks).await?,
        14 => pressure::p2_burst(env, &mut checks).await?,
        15 => pressure::p0_saturation(env, (opts.jobs * 20).min(15_000), &mut checks).await?,
        17 => pressure::skewed_producer(env, &mut checks).await?,
        _ => {}
    }
    let end_ms = if case == 10 { start_ms + 1 } else { now_ms() };
    Ok(Fault {
        start_ms,
        end_ms,
        checks,
    })
}

pub(super) fn worker(env: &mut Env, i: usize) -> Result<&mut crate::local::Process, ChaosError> {
    let id = format!("worker-{i}");
    env.stack.worker(&id).ok_or(ChaosError::NoProcess(id))
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

/// The results of `ids` present once all are, or when `timeout` passes.
pub(super) async fn wait_for(
    env: &Env,
    ids: &[String],
    timeout: Duration,
) -> Vec<JobResult<'static>> {
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

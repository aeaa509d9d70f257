//! Faults carried by jobs: a poison job that crashes or hangs its worker, and jobs for a
//! model the worker refused to load.

use std::time::Duration;

use jetinfer_schemas::{ErrorCode, Job, JobResult, Priority, Tensor};

use super::{wait_for, worker};
use crate::chaos::check::{check, Check};
use crate::chaos::env::Env;
use crate::chaos::triggers::{POISON_HANG, POISON_STICKY};
use crate::chaos::ChaosError;

/// One job that takes down whichever worker runs it; the suite restarts workers (as a
/// supervisor would) until the job is answered `poison` and dead-lettered.
pub(super) async fn poison(
    case: u32,
    env: &mut Env,
    checks: &mut Vec<Check>,
) -> Result<(), ChaosError> {
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
        let running = record_exits(env, &mut crashes);
        for _ in running..2 {
            env.stack.start_worker(Vec::<String>::new())?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The answer can land before the last crashed worker's exit is seen (its failures are
    // counted as soon as the dispatcher hears it is gone): give the exits a moment.
    let seen_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while crashes.is_empty() && tokio::time::Instant::now() < seen_by {
        record_exits(env, &mut crashes);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// Adds each worker that has exited (and is not listed yet) to `crashes` with its status;
/// returns how many still run.
fn record_exits(env: &mut Env, crashes: &mut Vec<(String, std::process::ExitStatus)>) -> usize {
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
    running
}

/// Jobs for the model whose checksum failed wait, then get `unknown_model`; the worker
/// says why and serves its other models.
pub(super) async fn bad_checksum(env: &mut Env, checks: &mut Vec<Check>) -> Result<(), ChaosError> {
    let golden = crate::golden::Golden::load(crate::local::repo_root()?.join("models/out"))?;
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

//! A job that takes down every worker that runs it becomes `poison`, lands in the
//! dead-letter stream, and `jetinfer dlq list|replay` show and resend it.

use std::time::Duration;

use jetinfer_devkit::local::{binary, LocalStack};
use jetinfer_schemas::{ErrorCode, Job, Priority, Tensor};
use jetinfer_tests::{golden, run_id};

fn jetinfer(stack: &LocalStack, args: &[&str]) -> String {
    let out = std::process::Command::new(binary("jetinfer").unwrap())
        .args([
            "--nats-url",
            stack.nats_url(),
            "--redis-url",
            stack.redis_url(),
        ])
        .args(args)
        .output()
        .expect("running jetinfer");
    assert!(
        out.status.success(),
        "jetinfer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killing_job_is_dead_lettered_and_can_be_replayed() {
    let mut stack = LocalStack::builder()
        .workers(2)
        .dispatcher_args(["--max-attempts", "2", "--heartbeat-timeout-ms", "2000"])
        .worker_args(["--inject-faults", "sticky_on=-777"])
        .start()
        .await
        .unwrap();
    let client = stack.client().await.unwrap();
    let id = format!("{}-poison", run_id("dlq"));
    let mut inputs = golden().samples("mlp")[0].inputs.clone();
    let mut values = inputs[0].to_f32_vec();
    values[0] = -777.0;
    inputs[0] = Tensor::from_f32(inputs[0].shape.clone(), &values);
    client
        .submit(Priority::P1, &Job::new(id.clone(), "mlp", inputs))
        .await
        .unwrap();

    // Each run kills its worker (sticky CUDA error, injected): restart them like a supervisor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Some(r) = client.get(&id).await.unwrap() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison job was never answered"
        );
        let running = stack
            .workers()
            .iter_mut()
            .map(|w| w.is_running())
            .filter(|&up| up)
            .count();
        for _ in running..2 {
            stack.start_worker(Vec::<String>::new()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(result.error_code(), Some(ErrorCode::Poison), "{result:?}");

    let listed = jetinfer(&stack, &["dlq", "list"]);
    assert!(
        listed.contains(&id),
        "dlq list does not show {id}:\n{listed}"
    );
    assert!(listed.contains("1 dead letter(s)"), "{listed}");

    let replayed = jetinfer(&stack, &["dlq", "replay", &id]);
    assert!(replayed.contains("1 dead letter(s) replayed"), "{replayed}");
    let after = jetinfer(&stack, &["dlq", "list"]);
    assert!(
        !after.contains(&format!(" {id} ")),
        "the replayed letter is still listed:\n{after}"
    );
    // Replay removed the poison result so the job runs again (and, the fault being still
    // injected, comes back as poison in time).
    let pending = client.get(&id).await.unwrap();
    assert!(
        pending.as_ref().is_none_or(|r| r.attempts == 1),
        "the replayed job should start over (no result yet, or a fresh one): {pending:?}"
    );
}

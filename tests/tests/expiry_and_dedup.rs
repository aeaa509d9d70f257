//! Deadlines and resubmission: an expired job never reaches a worker; the same job id
//! submitted again is dropped inside JetStream's duplicate window, and after it (when it may
//! run again: its worker finds the stored result) never changes the stored result.

use std::time::Duration;

use jetinfer_schemas::{now_ms, ErrorCode, Job, Priority, Status};
use jetinfer_tests::{collect_results, golden, run_id, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_job_gets_expired_from_the_dispatcher() {
    let stack = stack(1, &["--id", "dispatcher-under-test"]).await;
    let client = stack.client().await.unwrap();
    let id = format!("{}-late", run_id("expiry"));
    let mut job = Job::new(id.clone(), "mlp", golden().samples("mlp")[0].inputs.clone());
    // Well past the dispatcher's clock-skew tolerance (1 s by default).
    job.deadline_ms = Some(now_ms() - 10_000);
    client.submit(Priority::P0, &job).await.unwrap();
    let r = client.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, Status::Expired);
    assert_eq!(r.error_code(), Some(ErrorCode::Expired));
    // Answered by the dispatcher: no worker, no batch.
    assert_eq!(r.worker, "dispatcher-under-test");
    assert_eq!(r.timings.batch_size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_a_job_id_never_changes_its_result() {
    // A 1 s duplicate window lets the test also resubmit after JetStream forgot the id.
    let stack = stack(1, &["--duplicate-window-s", "1"]).await;
    let client = stack.client().await.unwrap();
    let id = format!("{}-once", run_id("dedup"));
    let job = Job::new(id.clone(), "mlp", golden().samples("mlp")[1].inputs.clone());
    assert!(!client.submit(Priority::P1, &job).await.unwrap().duplicate);
    let first = client.wait(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.status, Status::Ok);

    // Inside the window: JetStream itself drops the copy.
    assert!(
        client.submit(Priority::P1, &job).await.unwrap().duplicate,
        "JetStream should report a duplicate"
    );

    // Outside the window: a new message; its run finds the stored result (`SET NX`), the
    // dispatcher finds it is the job's own, and acks.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!client.submit(Priority::P1, &job).await.unwrap().duplicate);
    let js = async_nats::jetstream::new(stack.connect_nats().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = js
            .get_stream(jetinfer_schemas::names::jobs_stream(Priority::P1))
            .await
            .unwrap();
        if stream.info().await.unwrap().state.messages == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resubmitted job was never acked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = collect_results(&client, std::slice::from_ref(&id), Duration::from_secs(1))
        .await
        .remove(&id)
        .unwrap();
    assert_eq!(again, first, "the stored result changed");
}

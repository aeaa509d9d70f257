//! Job ids cannot be hijacked, and a lying worker cannot get a job acked (issue 11):
//! - a payload whose `id` differs from its `Nats-Msg-Id` is refused with `bad_payload`
//!   under the header's id, and nothing is written under the payload's;
//! - a job that reuses a finished job's id with other inputs (after JetStream's duplicate
//!   window) is refused as a `conflict` and the first result stands; the same job sent
//!   again is acked without a conflict;
//! - a responder that answers `stored` without storing gets nothing acked: the job stays
//!   in its stream and gets its real result once a real worker runs it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_devkit::golden::compare;
use jetinfer_devkit::local::wait_for_workers;
use jetinfer_schemas::names::{
    done_subject, heartbeat_subject, job_subject, jobs_stream, worker_run_subject, DONE_CONFLICT,
};
use jetinfer_schemas::worker::{Heartbeat, ModelInfo, RunOutcome, RunReply, RunRequest};
use jetinfer_schemas::{encode, now_ms, ErrorCode, Job, Priority, Status, SCHEMA_VERSION};
use jetinfer_tests::{
    assert_all_correct, collect_results, golden, run_id, stack, Expected, ATOL, RTOL,
};

const WAIT: Duration = Duration::from_secs(30);

/// Messages left in a priority's stream (WorkQueue: acked messages are removed).
async fn stream_messages(js: &async_nats::jetstream::Context, p: Priority) -> u64 {
    let mut stream = js.get_stream(jobs_stream(p)).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_id_other_than_its_msg_id_is_refused_under_the_msg_id() {
    let stack = stack(1, &[]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("msgid");
    let (mine, victim) = (format!("{run}-mine"), format!("{run}-victim"));
    let sample = &golden().samples("pair")[0];
    let payload = encode(&Job::new(victim.clone(), "pair", sample.inputs.clone()));
    client
        .publish_raw(&job_subject(Priority::P1, "pair"), &mine, payload.into())
        .await
        .unwrap();
    let found = collect_results(&client, std::slice::from_ref(&mine), WAIT).await;
    let refused = found
        .get(&mine)
        .expect("an error result under the Nats-Msg-Id");
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::BadPayload),
        "{refused:?}"
    );
    // A job published after it has finished, so the refused one had its chance to write.
    let barrier = Expected {
        id: format!("{run}-barrier"),
        priority: Priority::P1,
        expected: sample.outputs.clone(),
    };
    let job = Job::new(barrier.id.clone(), "pair", sample.inputs.clone());
    client.submit(Priority::P1, &job).await.unwrap();
    assert_all_correct(&client, &[barrier], WAIT).await;
    assert!(
        client.get(&victim).await.unwrap().is_none(),
        "nothing may be written under the payload's id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_with_other_inputs_is_a_conflict_and_the_first_result_stands() {
    // A 1 s duplicate window, so the second publish reaches the dispatcher.
    let stack = stack(1, &["--duplicate-window-s", "1"]).await;
    let client = stack.client().await.unwrap();
    let nats = stack.connect_nats().await.unwrap();
    let samples = golden().samples("pair");
    let (first, other) = (&samples[0], &samples[1]);
    assert_ne!(first.inputs, other.inputs, "golden samples must differ");
    let id = format!("{}-x", run_id("conflict"));
    let owner = Expected {
        id: id.clone(),
        priority: Priority::P1,
        expected: first.outputs.clone(),
    };
    let job = Job::new(id.clone(), "pair", first.inputs.clone());
    client.submit(Priority::P1, &job).await.unwrap();
    let stored = assert_all_correct(&client, &[owner], WAIT).await[&id].clone();
    assert!(
        !stored.inputs_digest.is_empty(),
        "results record their inputs' digest"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await; // past the duplicate window

    let mut notices = nats.subscribe(done_subject(&id)).await.unwrap();
    let squatter = Job::new(id.clone(), "pair", other.inputs.clone());
    let duplicate = client.submit(Priority::P1, &squatter).await.unwrap();
    assert!(
        !duplicate.duplicate,
        "the duplicate window has passed: JetStream must take the job"
    );
    let notice = tokio::time::timeout(WAIT, notices.next())
        .await
        .expect("a completion notice for the refused job")
        .unwrap();
    assert_eq!(&notice.payload[..], DONE_CONFLICT.as_bytes());
    let after = client.get(&id).await.unwrap().expect("the first result");
    assert_eq!(after, stored, "the first job's result is untouched");
    compare(&first.outputs, &after.outputs, ATOL, RTOL).unwrap();

    // The same job again (a resubmission after the window) is its own result: no conflict.
    client.submit(Priority::P1, &job).await.unwrap();
    let js = client.jetstream();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stream_messages(js, Priority::P1).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resubmission was never acked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let more = tokio::time::timeout(Duration::from_millis(500), notices.next()).await;
    assert!(
        more.is_err(),
        "no notice for a resubmission of the same job: {more:?}"
    );
}

/// A fake worker that announces `pair` and answers every job of every run request with
/// `outcome` without storing anything; counts the requests it answered.
fn spawn_liar(
    nats: async_nats::Client,
    answered: Arc<AtomicUsize>,
    outcome: RunOutcome,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut requests = nats.subscribe(worker_run_subject("liar")).await.unwrap();
        let mut beat = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let hb = Heartbeat {
                        v: SCHEMA_VERSION,
                        worker: "liar".into(),
                        models: vec![ModelInfo {
                            name: "pair".into(),
                            version: "1".into(),
                            max_batch_size: 8,
                            inputs: Vec::new(),
                            batch_ms: None,
                        }],
                        slots: 8,
                        free_slots: 8,
                        devices: vec!["cpu".into()],
                        gpu_memory_bytes: None,
                        accepting: true,
                        sent_at_ms: now_ms(),
                        load_errors: Vec::new(),
                        load: None,
                    };
                    let _ = nats.publish(heartbeat_subject("liar"), encode(&hb).into()).await;
                }
                Some(msg) = requests.next() => {
                    let request: RunRequest = rmp_serde::from_slice(&msg.payload).unwrap();
                    let reply = RunReply {
                        v: SCHEMA_VERSION,
                        outcomes: vec![outcome; request.jobs.len()],
                    };
                    if let Some(to) = msg.reply {
                        let _ = nats.publish(to, encode(&reply).into()).await;
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_says_stored_without_storing_gets_no_job_acked() {
    a_lying_worker_gets_no_job_acked(RunOutcome::Stored).await;
}

/// `Existing` (a result stored before this run) is a claim too: the dispatcher reads the
/// result to compare it with the job, and finds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_says_existing_without_a_result_gets_no_job_acked() {
    a_lying_worker_gets_no_job_acked(RunOutcome::Existing).await;
}

async fn a_lying_worker_gets_no_job_acked(outcome: RunOutcome) {
    let mut stack = stack(0, &[]).await;
    let client = stack.client().await.unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let liar = spawn_liar(
        stack.connect_nats().await.unwrap(),
        answered.clone(),
        outcome,
    );
    let sample = &golden().samples("pair")[0];
    let expected = Expected {
        id: format!("{}-x", run_id("liar")),
        priority: Priority::P1,
        expected: sample.outputs.clone(),
    };
    let job = Job::new(expected.id.clone(), "pair", sample.inputs.clone());
    client.submit(Priority::P1, &job).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while answered.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fake worker got no run requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.get(&expected.id).await.unwrap().is_none());
    assert_eq!(
        stream_messages(client.jetstream(), Priority::P1).await,
        1,
        "a job answered {outcome:?} without a result must not be acked"
    );
    liar.abort();
    stack.start_worker(Vec::<String>::new()).unwrap();
    let nats = stack.connect_nats().await.unwrap();
    wait_for_workers(&nats, 1, WAIT).await.unwrap();
    let results = assert_all_correct(&client, &[expected.clone()], WAIT).await;
    assert_eq!(results[&expected.id].status, Status::Ok);
    assert_ne!(results[&expected.id].worker, "liar");
}

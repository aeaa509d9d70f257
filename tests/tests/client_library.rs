//! The client library against a real stack: `Client::builder`, `wait_many` (results in
//! order over one subscription, a typed timeout naming the missing ids), `submit_and_wait`
//! (and its id-conflict check), the typed publish refusals (a full stream, no stream, an
//! invalid job), retry with back-off once a full stream has room again, and dead-letter
//! replay through `jetinfer_client::dlq`.

use std::time::Duration;

use async_nats::jetstream;
use jetinfer_client::dlq::{replay, Selection};
use jetinfer_client::{Client, ClientError, ResultWrite, RetryPolicy};
use jetinfer_devkit::golden::compare;
use jetinfer_schemas::names::{
    dlq_subject, job_subject, DLQ_FAILURES_HEADER, DLQ_REASON_HEADER, DLQ_STREAM,
    DLQ_SUBJECT_HEADER,
};
use jetinfer_schemas::{encode, ErrorCode, Job, JobError, JobResult, Priority, Status};
use jetinfer_tests::{golden, publish_samples, run_id, stack, Expected, ATOL, RTOL};

/// Starts `wait_many` on the ids of `n` jobs before they are published, publishes them,
/// and checks every result, in order, against PyTorch's outputs.
async fn wait_for_jobs_published_while_waiting(client: &Client, n: usize, prefix: &str) {
    let samples = golden().samples("mlp");
    let expected: Vec<Expected> = (0..n)
        .map(|i| Expected {
            id: format!("{prefix}-p1-mlp-{i}"),
            priority: Priority::P1,
            expected: samples[i % samples.len()].outputs.clone(),
        })
        .collect();
    // The first id asked twice: it gets its result twice.
    let mut ids: Vec<String> = expected.iter().map(|e| e.id.clone()).collect();
    ids.push(ids[0].clone());
    let waiter = {
        let (client, ids) = (client.clone(), ids.clone());
        tokio::spawn(async move { client.wait_many(&ids, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published = publish_samples(client, "mlp", n, Priority::P1, prefix).await;
    assert_eq!(
        published.iter().map(|p| &p.id).collect::<Vec<_>>(),
        expected.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let results = waiter
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("wait_many of {n} jobs: {e}"));
    assert_eq!(results.len(), ids.len());
    for (r, id) in results.iter().zip(&ids) {
        assert_eq!(&r.id, id, "results out of order");
        assert_eq!(r.status, Status::Ok, "job {id} failed: {:?}", r.error);
    }
    for (r, e) in results.iter().zip(&expected) {
        compare(&e.expected, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|err| panic!("job {} output differs from PyTorch: {err}", e.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_many_returns_results_in_order_and_names_the_missing() {
    let stack = stack(1, &[]).await;
    let client = Client::builder(stack.nats_url())
        .redis(stack.redis_url())
        .name("client-library-test")
        .retry_on_initial_connect(false)
        .connect()
        .await
        .unwrap();
    let run = run_id("wait-many");
    // Few ids: one subscription per id. Many: one wildcard subscription.
    wait_for_jobs_published_while_waiting(&client, 8, &format!("{run}-few")).await;
    wait_for_jobs_published_while_waiting(&client, 150, &format!("{run}-many")).await;

    // Results already stored come back at once; an id never published times out, named.
    let done = format!("{run}-few-p1-mlp-3");
    let never = format!("{run}-never");
    let started = tokio::time::Instant::now();
    let err = client
        .wait_many(&[done.as_str(), never.as_str()], Duration::from_millis(800))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let ClientError::TimeoutMany(t) = err else {
        panic!("expected TimeoutMany, got {err}");
    };
    assert_eq!(t.missing, vec![never.clone()]);
    assert_eq!(t.results.len(), 2);
    assert_eq!(
        t.results[0].as_ref().map(|r| r.id.as_str()),
        Some(done.as_str())
    );
    assert!(t.results[1].is_none());
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "the timeout took {waited:?}"
    );
    assert!(client
        .wait_many::<&str>(&[], Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_through_the_library_runs_again() {
    let stack = stack(1, &[]).await;
    let client = stack.client().await.unwrap();
    let js = jetstream::new(client.nats().clone());
    let id = format!("{}-letter", run_id("replay"));
    let sample = golden().samples("mlp").remove(0);
    let job = Job::new(id.clone(), "mlp", sample.inputs.clone());
    let subject = job_subject(Priority::P1, "mlp");

    // A dead letter as the dispatcher writes one, and the poison result that goes with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while js.get_stream(DLQ_STREAM).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead-letter stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    headers.insert(DLQ_REASON_HEADER, "lost its worker twice");
    headers.insert(DLQ_FAILURES_HEADER, "2");
    headers.insert(DLQ_SUBJECT_HEADER, subject.as_str());
    js.publish_with_headers(dlq_subject("mlp"), headers, encode(&job).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let poison = JobResult::failed(&id, "mlp", JobError::new(ErrorCode::Poison, "test"));
    let stored = client
        .store()
        .put_results(
            &[ResultWrite {
                id: &id,
                bytes: encode(&poison),
                drop_inputs: false,
            }],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stored, [true]);

    let letters = client.dead_letters().await.unwrap();
    let letter = letters
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("{id} not among the dead letters: {letters:?}"));
    assert_eq!(letter.subject, subject);
    assert_eq!(letter.reason, "lost its worker twice");
    assert_eq!(letter.failures, "2");
    assert_eq!(letter.payload.as_ref(), encode(&job).as_slice());

    let other = Selection::Ids(vec![format!("{id}-other")]);
    assert!(replay(&client, &other).await.unwrap().is_empty());
    let replayed = replay(&client, &Selection::Ids(vec![id.clone()]))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0].id, id);
    assert_eq!(replayed[0].subject, subject);
    assert_eq!(replayed[0].seq, letter.seq);
    assert!(
        replayed[0].msg_id.starts_with(&format!("{id}:replay:")),
        "{replayed:?}"
    );
    let after = client.dead_letters().await.unwrap();
    assert!(
        after.iter().all(|l| l.id != id),
        "the replayed letter is still listed: {after:?}"
    );

    // The poison result is gone, so the job runs for real this time.
    let result = client.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(result.status, Status::Ok, "{:?}", result.error);
    compare(&sample.outputs, &result.outputs, ATOL, RTOL).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_returns_the_result_and_refuses_another_jobs() {
    let stack = stack(1, &[]).await;
    let client = stack.client().await.unwrap();
    let id = format!("{}-one", run_id("submit-wait"));
    let sample = golden().samples("mlp").remove(0);
    let job = Job::new(id.clone(), "mlp", sample.inputs.clone());
    let result = client
        .submit_and_wait(Priority::P0, &job, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(result.id, id);
    assert_eq!(result.status, Status::Ok, "{:?}", result.error);
    compare(&sample.outputs, &result.outputs, ATOL, RTOL).unwrap();

    // The same id for another model: JetStream drops the publish as a duplicate, and the
    // stored result is not this job's.
    let pair = golden().samples("pair").remove(0);
    let other = Job::new(id.clone(), "pair", pair.inputs.clone());
    let err = client
        .submit_and_wait(Priority::P0, &other, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::IdConflict { id: got, .. } if got == &id),
        "expected an id conflict, got {err}"
    );
    assert_eq!(err.error_type(), "id_conflict");
}

/// A stream limited to a few messages and no worker: the next publish is refused as
/// `StreamFull`; a client that retries with back-off gets its job in once a worker has
/// run the backlog, and the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_is_a_typed_error_and_retry_with_backoff_gets_in() {
    const LIMIT: usize = 4;
    let mut stack = stack(
        0,
        &[
            "--stream-max-msgs",
            &LIMIT.to_string(),
            "--unknown-model-after-ms",
            "120000",
        ],
    )
    .await;
    let client = stack.client().await.unwrap();
    let run = run_id("full");
    let backlog = publish_samples(&client, "mlp", LIMIT, Priority::P1, &run).await;
    let sample = golden().samples("mlp").remove(0);
    let job = Job::new(format!("{run}-late"), "mlp", sample.inputs.clone());
    let err = client.submit(Priority::P1, &job).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::StreamFull { subject, .. } if subject == "jetinfer.jobs.p1.mlp"),
        "a full stream refuses with StreamFull: {err:?}"
    );
    assert_eq!(err.error_type(), "stream_full");
    assert!(err.is_retryable());
    // Other priorities have their own streams.
    let urgent = Job::new(format!("{run}-urgent"), "mlp", sample.inputs.clone());
    client.submit(Priority::P0, &urgent).await.unwrap();

    // The other typed refusals: no stream on the subject, an invalid job.
    let none = client
        .publish_raw(
            "jetinfer.nowhere.mlp",
            &format!("{run}-x"),
            encode(&job).into(),
        )
        .await
        .unwrap_err();
    assert!(matches!(none, ClientError::NoStream { .. }), "{none:?}");
    assert_eq!(none.error_type(), "no_stream");
    let bad = Job::new("not a valid id", "mlp", sample.inputs.clone());
    let invalid = client.submit(Priority::P1, &bad).await.unwrap_err();
    assert!(matches!(invalid, ClientError::InvalidJob(_)), "{invalid:?}");
    assert_eq!(invalid.error_type(), "invalid_job");

    // Retrying: still refused while the stream is full, accepted once a worker has run
    // the backlog.
    let patient = Client::builder(stack.nats_url())
        .redis(stack.redis_url())
        .retry_on_initial_connect(false)
        .retry_when_full(RetryPolicy {
            initial: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(60),
        })
        .connect()
        .await
        .unwrap();
    let submitting = {
        let (patient, job) = (patient.clone(), job.clone());
        tokio::spawn(async move { patient.submit(Priority::P1, &job).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !submitting.is_finished(),
        "the retrying submit ended while the stream was full: {:?}",
        submitting.await
    );
    stack.start_worker(Vec::<String>::new()).unwrap();
    let submitted = tokio::time::timeout(Duration::from_secs(60), submitting)
        .await
        .expect("the retrying submit got in once the stream had room")
        .unwrap()
        .unwrap();
    assert!(!submitted.duplicate);
    let result = patient
        .wait(&job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(result.status, Status::Ok, "{:?}", result.error);
    compare(&sample.outputs, &result.outputs, ATOL, RTOL).unwrap();
    let ids: Vec<String> = backlog.iter().map(|e| e.id.clone()).collect();
    let all = patient
        .wait_many(&ids, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(all.iter().all(|r| r.status == Status::Ok));
}

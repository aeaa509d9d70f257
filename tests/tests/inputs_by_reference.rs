//! The claim check: jobs whose inputs travel through Redis instead of JetStream run like
//! inline jobs, their inputs are deleted once the results are stored, and inputs that are
//! gone or not what the job's reference says end as `bad_payload`, not as a crash or a
//! wrong result.

use std::time::Duration;

use jetinfer_schemas::inputs_ref::store_inputs;
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::{encode, ErrorCode, Job, Priority, Status};
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sent_by_reference_run_beside_inline_ones_and_leave_nothing_behind() {
    // No worker until the jobs are queued: their inputs must be in Redis meanwhile.
    let mut stack = stack(0, &[]).await;
    let inline = stack.client().await.unwrap().with_inline_limit(usize::MAX);
    let by_ref = inline.clone().with_inline_limit(0);
    let run = run_id("byref");
    let (ref_prefix, inline_prefix) = (format!("{run}-ref"), format!("{run}-inline"));
    let (a, b) = tokio::join!(
        publish_samples(&by_ref, "mlp", 200, Priority::P1, &ref_prefix),
        publish_samples(&inline, "mlp", 200, Priority::P1, &inline_prefix),
    );
    let ids: Vec<&str> = a.iter().map(|j| j.id.as_str()).collect();
    let stored = by_ref.store().get_inputs(&ids).await.unwrap();
    assert!(
        stored.iter().all(Option::is_some),
        "queued jobs' inputs wait in Redis"
    );
    let inline_ids: Vec<&str> = b.iter().map(|j| j.id.as_str()).collect();
    let stored = by_ref.store().get_inputs(&inline_ids).await.unwrap();
    assert!(
        stored.iter().all(Option::is_none),
        "inline jobs store no inputs"
    );

    stack.start_worker(Vec::<String>::new()).unwrap();
    let all: Vec<_> = a.iter().chain(&b).cloned().collect();
    assert_all_correct(&by_ref, &all, Duration::from_secs(60)).await;
    let left = by_ref.store().get_inputs(&ids).await.unwrap();
    assert_eq!(
        left.iter().filter(|v| v.is_some()).count(),
        0,
        "inputs are deleted once the results are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_substituted_inputs_are_bad_payload() {
    let stack = stack(1, &[]).await;
    let client = stack.client().await.unwrap();
    let run = run_id("byref-bad");
    let samples = golden().samples("mlp");
    let (_, reference) = store_inputs(&samples[0].inputs);
    let (other_value, _) = store_inputs(&samples[1].inputs);

    // A reference to inputs nobody stored, and one whose stored value is another sample's.
    let missing = format!("{run}-missing");
    let substituted = format!("{run}-substituted");
    client
        .store()
        .put_inputs(&substituted, &other_value, Duration::from_secs(60))
        .await
        .unwrap();
    for id in [&missing, &substituted] {
        let mut job = Job::new(id.as_str(), "mlp", Vec::new());
        job.inputs_ref = Some(reference.clone());
        client
            .publish_raw(&job_subject(Priority::P1, "mlp"), id, encode(&job).into())
            .await
            .unwrap();
    }
    for (id, says) in [(&missing, "not in the store"), (&substituted, "digest")] {
        let r = client.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(r.status, Status::Error, "{id}");
        assert_eq!(r.error_code(), Some(ErrorCode::BadPayload), "{id}");
        let message = &r.error.as_ref().unwrap().message;
        assert!(message.contains(says), "{id}: {message}");
    }
}

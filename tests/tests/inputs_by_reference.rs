//! The claim check: jobs whose inputs travel through Redis instead of JetStream run like
//! inline jobs, their inputs are deleted once the results are stored, and inputs that are
//! gone or not what the job's reference says end as `bad_payload`, not as a crash or a
//! wrong result.

use std::time::Duration;

use jetinfer_client::{InputStores, ResultStore, StoreConfig};
use jetinfer_devkit::local::RedisServer;
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

/// Inputs spread over two more Redis servers (`--inputs-redis-url`): every job runs with
/// the inputs of the store its reference names, the stores all get some, and each store's
/// inputs are deleted once the results are stored. A worker not given the extra stores
/// answers their jobs `bad_payload`, naming the misconfiguration, instead of looping them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_spread_over_several_input_stores() {
    let extra: Vec<RedisServer> = (0..2).map(|_| RedisServer::start().unwrap()).collect();
    let urls: Vec<String> = extra.iter().map(RedisServer::url).collect();
    let mut stack = stack(0, &[]).await;
    let plain = stack.client().await.unwrap();
    let main_config = StoreConfig::new(stack.redis_url());
    let inputs = InputStores::new(plain.store().clone(), &main_config, &urls).unwrap();
    let client = plain.clone().with_inline_limit(0).with_input_stores(inputs);
    let run = run_id("byref-stores");
    let jobs = publish_samples(&client, "mlp", 300, Priority::P1, &run).await;

    // Each store holds the inputs of the jobs whose id maps to it, and only those.
    let stores: Vec<ResultStore> = std::iter::once(stack.redis_url().to_string())
        .chain(urls.iter().cloned())
        .map(|url| ResultStore::new(&StoreConfig::new(url)).unwrap())
        .collect();
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    for (n, store) in stores.iter().enumerate() {
        let held = store.get_inputs(&ids).await.unwrap();
        let expected: Vec<bool> = ids
            .iter()
            .map(|id| usize::from(jetinfer_schemas::inputs_ref::input_store_for(id, 3)) == n)
            .collect();
        let got: Vec<bool> = held.iter().map(Option::is_some).collect();
        assert_eq!(got, expected, "store {n} holds exactly its jobs' inputs");
        assert!(
            got.iter().filter(|h| **h).count() > 50,
            "store {n} gets a share"
        );
    }

    let mut args: Vec<String> = Vec::new();
    for url in &urls {
        args.extend(["--inputs-redis-url".to_string(), url.clone()]);
    }
    stack.start_worker(args).unwrap();
    assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    for (n, store) in stores.iter().enumerate() {
        let left = store.get_inputs(&ids).await.unwrap();
        assert!(
            left.iter().all(Option::is_none),
            "store {n}: inputs are deleted once the results are stored"
        );
    }

    // A worker that knows only the result store: jobs in store 1 or 2 end as bad_payload.
    stack.workers()[0].stop_within(Duration::from_secs(10));
    stack.start_worker(Vec::<String>::new()).unwrap();
    let misplaced = format!("{run}-elsewhere");
    let outside = (0..100)
        .map(|i| format!("{misplaced}-{i}"))
        .find(|id| jetinfer_schemas::inputs_ref::input_store_for(id, 3) != 0)
        .unwrap();
    let sample = &golden().samples("mlp")[0];
    let job = Job::new(outside.as_str(), "mlp", sample.inputs.clone());
    client.submit(Priority::P1, &job).await.unwrap();
    let r = client
        .wait(&outside, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.error_code(), Some(ErrorCode::BadPayload));
    let message = &r.error.as_ref().unwrap().message;
    assert!(message.contains("--inputs-redis-url"), "{message}");
}

//! The `jetinfer` binary against a real stack: `submit` from stdin with `--wait --json`,
//! `get`/`status` of a stored job, exit codes (0 ok, 2 not finished, 3 error, 4 unknown),
//! `status` of a job waiting in its stream (with its trace id and lost runs), held by the
//! dispatcher, and dead-lettered, `models` listing the sample models where they are
//! served, `stats`/`dlq --json`, and `demo` ignoring an inherited `NATS_URL` (starting its
//! own stack) unless `--use-running` says otherwise.

use std::process::{Output, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use jetinfer_devkit::golden::compare;
use jetinfer_devkit::json::{tensor_from_json, tensor_to_json};
use jetinfer_devkit::local::{binary, repo_root, LocalStack};
use jetinfer_schemas::names::{
    dlq_subject, job_subject, DLQ_FAILURES_HEADER, DLQ_REASON_HEADER, DLQ_STREAM,
    DLQ_SUBJECT_HEADER,
};
use jetinfer_schemas::{encode, ErrorCode, Job, JobError, JobResult, Priority};
use jetinfer_tests::cli::text;
use jetinfer_tests::{golden, run_id, stack, ATOL, RTOL};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Runs `jetinfer ARGS` against `stack` (URLs from the environment, as a user would set
/// them), feeding `stdin`.
async fn jetinfer(stack: &LocalStack, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = tokio::process::Command::new(binary("jetinfer").unwrap());
    cmd.args(args)
        .current_dir(repo_root().unwrap())
        .env("NATS_URL", stack.nats_url())
        .env("REDIS_URL", stack.redis_url())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting jetinfer");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("jetinfer finished in time")
        .unwrap()
}

/// The one JSON document a `--json` command printed on stdout.
fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(out)))
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_get_status_models_and_exit_codes_against_a_stack() {
    let stack = stack(1, &[]).await;
    let run = run_id("cli");
    let sample = golden().samples("mlp").remove(0);
    let input = serde_json::to_vec(&tensor_to_json(&sample.inputs[0])).unwrap();

    // submit from piped stdin, waiting for the result.
    let id = format!("{run}-ok");
    let out = jetinfer(
        &stack,
        &["submit", "--model", "mlp", "--id", &id, "--wait", "--json"],
        Some(&input),
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let result = json_of(&out);
    assert_eq!(result["id"], id.as_str());
    assert_eq!(result["status"], "ok", "{result}");
    let outputs: Vec<_> = result["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| tensor_from_json(t).unwrap())
        .collect();
    compare(&sample.outputs, &outputs, ATOL, RTOL).unwrap();

    // get and status of the stored job.
    let out = jetinfer(&stack, &["get", &id, "--json"], None).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_of(&out)["status"], "ok");
    let out = jetinfer(&stack, &["status", &id, "--json"], None).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status = json_of(&out);
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["result"]["status"], "ok");
    assert_eq!(status["failures"], 0);
    let out = jetinfer(&stack, &["status", &id], None).await;
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains("finished ok by worker-0"), "{}", text(&out));

    // A job the worker refuses (wrong shape for mlp) ends as error: exit code 3; `-` is
    // standard input too.
    let bad = format!("{run}-bad");
    let wrong = br#"{"dtype": "f32", "shape": [3], "data": [1, 2, 3]}"#;
    let out = jetinfer(
        &stack,
        &[
            "submit", "--model", "mlp", "--id", &bad, "--input", "-", "--wait",
        ],
        Some(wrong),
    )
    .await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = jetinfer(&stack, &["get", &bad, "--json"], None).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(json_of(&out)["error"]["code"], "invalid_input");

    // Nothing known: status exits 4; get says pending (2).
    let never = format!("{run}-never");
    let out = jetinfer(&stack, &["status", &never, "--json"], None).await;
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert_eq!(json_of(&out)["state"], "unknown");
    let out = jetinfer(&stack, &["get", &never], None).await;
    assert_eq!(code(&out), 2, "{}", text(&out));

    // submit without --wait: the id as JSON.
    let out = jetinfer(
        &stack,
        &["submit", "--model", "mlp", "--json"],
        Some(&input),
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_of(&out)["duplicate"], false);

    // models: every sample model, served by worker-0 with its input specs.
    let out = jetinfer(&stack, &["models", "--json", "--listen-s", "2.5"], None).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let models = json_of(&out);
    let listed = models["models"].as_array().unwrap();
    for name in ["mlp", "pair", "imgmean"] {
        let m = listed
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {models}"));
        assert_eq!(m["workers"][0]["worker"], "worker-0", "{m}");
        assert_eq!(m["workers"][0]["devices"][0], "cpu", "{m}");
        assert!(!m["inputs"].as_array().unwrap().is_empty(), "{m}");
    }
    let pair = listed.iter().find(|m| m["name"] == "pair").unwrap();
    assert_eq!(pair["inputs"].as_array().unwrap().len(), 2, "{pair}");
    let out = jetinfer(&stack, &["models"], None).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("mlp") && table.contains("worker-0"),
        "{}",
        text(&out)
    );

    // stats and dlq parse as JSON.
    let out = jetinfer(&stack, &["stats", "--json", "--listen-s", "1.5"], None).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stats = json_of(&out);
    assert_eq!(stats["streams"].as_array().unwrap().len(), 3, "{stats}");
    let out = jetinfer(&stack, &["dlq", "list", "--json"], None).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(json_of(&out)["dead_letters"].is_array());

    // demo against this stack only when told: --use-running with the URLs from the
    // environment.
    let out = jetinfer(
        &stack,
        &["demo", "--use-running", "--jobs", "30", "--json"],
        None,
    )
    .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let demo = json_of(&out);
    assert_eq!(demo["all_right"], true, "{demo}");
    assert_eq!(demo["servers"]["started"], false, "{demo}");
    assert_eq!(demo["servers"]["nats"], stack.nats_url(), "{demo}");
}

/// No worker, the dispatcher holding one job per priority: the first job is held by the
/// dispatcher, the later ones wait in the stream; a dead letter is found as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_waiting_held_and_dead_lettered_jobs_apart() {
    let stack = stack(
        0,
        &[
            "--in-flight",
            "1,1,1",
            "--pull-batch",
            "1",
            "--unknown-model-after-ms",
            "300000",
        ],
    )
    .await;
    let client = stack.client().await.unwrap();
    let js = jetstream::new(client.nats().clone());
    let run = run_id("where");
    let sample = golden().samples("mlp").remove(0);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let ids: Vec<String> = (0..3).map(|i| format!("{run}-{i}")).collect();
    for id in &ids {
        let job = Job::new(id.clone(), "mlp", sample.inputs.clone());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(
            "traceparent",
            format!("00-{trace}-00f067aa0ba902b7-01").as_str(),
        );
        js.publish_with_headers(
            job_subject(Priority::P1, "mlp"),
            headers,
            encode(&job).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    client
        .store()
        .add_failures(&[ids[2].as_str()])
        .await
        .unwrap();

    // The dispatcher takes the first (its only permit); the others wait behind it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let held = loop {
        let out = jetinfer(&stack, &["status", &ids[0], "--json"], None).await;
        let s = json_of(&out);
        if s["state"] == "held" {
            assert_eq!(code(&out), 2, "{}", text(&out));
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never held: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held["stream"]["stream"], "JETINFER_P1", "{held}");
    assert_eq!(held["stream"]["model"], "mlp", "{held}");
    let out = jetinfer(&stack, &["status", &ids[2], "--json"], None).await;
    assert_eq!(code(&out), 2, "{}", text(&out));
    let waiting = json_of(&out);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert_eq!(waiting["stream"]["ahead"], 1, "{waiting}");
    assert_eq!(waiting["trace_id"], trace, "{waiting}");
    assert_eq!(waiting["failures"], 1, "{waiting}");
    let out = jetinfer(&stack, &["status", &ids[2]], None).await;
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("waiting in JETINFER_P1")
            && human.contains("1 lost run")
            && human.contains(trace),
        "{}",
        text(&out)
    );

    // A dead letter as the dispatcher writes one, with its poison result.
    let letter = format!("{run}-letter");
    let job = Job::new(letter.clone(), "mlp", sample.inputs.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, letter.as_str());
    headers.insert(DLQ_REASON_HEADER, "lost its worker 5 times");
    headers.insert(DLQ_FAILURES_HEADER, "5");
    headers.insert(
        DLQ_SUBJECT_HEADER,
        job_subject(Priority::P1, "mlp").as_str(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while js.get_stream(DLQ_STREAM).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead-letter stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    js.publish_with_headers(dlq_subject("mlp"), headers, encode(&job).into())
        .await
        .unwrap()
        .await
        .unwrap();
    let poison = JobResult::failed(
        &letter,
        "mlp",
        JobError::new(ErrorCode::Poison, "took down workers"),
    );
    client
        .store()
        .put_results(
            &[jetinfer_client::ResultWrite {
                id: &letter,
                bytes: encode(&poison),
                drop_inputs: false,
            }],
            &[],
        )
        .await
        .unwrap();
    let out = jetinfer(&stack, &["status", &letter, "--json"], None).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    let dead = json_of(&out);
    assert_eq!(dead["state"], "dead_letter", "{dead}");
    assert_eq!(
        dead["dead_letter"]["reason"], "lost its worker 5 times",
        "{dead}"
    );
    assert_eq!(dead["result"]["error"]["code"], "poison", "{dead}");

    // models lists the queued model with no worker.
    let out = jetinfer(&stack, &["models", "--json", "--listen-s", "0.5"], None).await;
    let models = json_of(&out);
    let mlp = &models["models"][0];
    assert_eq!(mlp["name"], "mlp", "{models}");
    assert_eq!(mlp["queued"]["p1"], 3, "{models}");
    assert!(mlp["workers"].as_array().unwrap().is_empty(), "{models}");
}

/// An inherited NATS_URL (here: nothing listens there) does not redirect the demo: it
/// starts its own stack, says so, and names the unused variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_its_own_stack_whatever_the_environment_says() {
    let logs = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(binary("jetinfer").unwrap())
        .args(["demo", "--jobs", "30", "--workers", "1", "--json"])
        .arg("--log-dir")
        .arg(logs.path())
        .current_dir(repo_root().unwrap())
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env_remove("REDIS_URL")
        .output()
        .await
        .expect("running jetinfer demo");
    assert!(out.status.success(), "{}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["all_right"], true, "{report}");
    assert_eq!(report["servers"]["started"], true, "{report}");
    assert_ne!(report["servers"]["nats"], "nats://127.0.0.1:1", "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NATS_URL=nats://127.0.0.1:1 from the environment is not used")
            && stderr.contains("stack ready"),
        "{}",
        text(&out)
    );
}

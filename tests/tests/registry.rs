//! The model registry (NATS KV bucket `JETINFER_MODELS`) through the `jetinfer models`
//! commands against a real nats-server, and the dispatcher's checks against it on a real
//! stack:
//!
//! - seeding from models.toml declares every model once and is idempotent; a listed
//!   version that differs from the registry is refused and nothing is written;
//! - writes are compare-and-set: a writer holding a stale revision fails, and of two
//!   concurrent writers at one revision exactly one wins; each write has an audit record
//!   (who, when, what) and the history lists them; invalid weights are refused;
//! - rollback restores the previous revision;
//! - with a registry, a job for an undeclared model or version gets `unknown_model` within
//!   5 s on every priority although `--unknown-model-after-ms` is 30 s; a declared model
//!   with no worker waits; declared models run as before.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use jetinfer_devkit::json::tensor_to_json;
use jetinfer_devkit::local::{binary, repo_root, LocalStack, NatsServer};
use jetinfer_tests::cli::text;
use jetinfer_tests::golden;
use serde_json::Value;

/// Runs `jetinfer ARGS` with `NATS_URL` (and `REDIS_URL` when given) in the environment.
async fn jetinfer(nats: &str, redis: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(binary("jetinfer").unwrap());
    cmd.args(args)
        .current_dir(repo_root().unwrap())
        .env("NATS_URL", nats)
        .env_remove("JETINFER_OPERATOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(r) = redis {
        cmd.env("REDIS_URL", r);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("jetinfer finished in time")
        .unwrap()
}

/// The JSON document of a `--json` command that must succeed.
fn ok_json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(out)))
}

/// Asserts the command failed (exit 1) saying `needle` on stderr.
fn assert_refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr lacks {needle:?}:\n{}",
        text(out)
    );
}

/// Revision of every declared model, by name.
async fn revisions(nats: &str) -> Vec<(String, u64)> {
    let list = ok_json(&jetinfer(nats, None, &["models", "list", "--json"]).await);
    list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["revision"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn models_toml() -> String {
    repo_root()
        .unwrap()
        .join("models/out/models.toml")
        .to_string_lossy()
        .into_owned()
}

/// models.toml rewritten by `edit`, in a folder beside the model files (so relative
/// paths resolve to the same files).
fn edited_toml(dir: &Path, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(models_toml()).unwrap();
    let path = dir.join("models.toml");
    let out_dir = repo_root().unwrap().join("models/out");
    let text = edit(text).replace("path = \"", &format!("path = \"{}/", out_dir.display()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_cas_audit_weights_and_rollback_through_the_cli() {
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    let nats = nats.as_str();

    // No registry yet: an empty list; reading a model says the registry is missing.
    let list = ok_json(&jetinfer(nats, None, &["models", "list", "--json"]).await);
    assert_eq!(list["models"], Value::Array(vec![]), "{list}");
    let out = jetinfer(nats, None, &["models", "show", "mlp"]).await;
    assert_refused(&out, "does not exist yet");

    // Seeding declares each model once; seeding again changes nothing.
    let toml = models_toml();
    let seeded =
        ok_json(&jetinfer(nats, None, &["models", "seed", "--from", &toml, "--json"]).await);
    let actions: Vec<(&str, &str)> = seeded["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("mlp", "created"),
            ("pair", "created"),
            ("seqpool", "created"),
            ("imgmean", "created")
        ]
    );
    let before = revisions(nats).await;
    let again =
        ok_json(&jetinfer(nats, None, &["models", "seed", "--from", &toml, "--json"]).await);
    assert!(
        again["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["action"] == "unchanged"),
        "{again}"
    );
    assert_eq!(
        revisions(nats).await,
        before,
        "a second seed wrote something"
    );
    let mlp = ok_json(&jetinfer(nats, None, &["models", "show", "mlp", "--json"]).await);
    assert_eq!(mlp["default_version"], "1", "{mlp}");
    assert_eq!(mlp["weights"]["1"], 1.0, "{mlp}");
    assert_eq!(mlp["versions"][0]["inputs"][0]["shape"][0], 16, "{mlp}");
    assert_eq!(
        mlp["versions"][0]["batching"]["max_batch_size"], 32,
        "{mlp}"
    );
    assert_eq!(
        mlp["versions"][0]["placement"]["devices"][0], "cpu",
        "{mlp}"
    );
    let golden_sha = std::fs::read_to_string(models_toml())
        .unwrap()
        .lines()
        .find(|l| l.starts_with("sha256"))
        .map(|l| l.split('"').nth(1).unwrap().to_string())
        .unwrap();
    assert_eq!(mlp["versions"][0]["sha256"], golden_sha.as_str(), "{mlp}");

    // A seed file whose mlp version 1 differs is refused, and writes nothing at all (not
    // even the model it would add).
    let dir = tempfile::tempdir().unwrap();
    let differs = edited_toml(dir.path(), |t| {
        t.replacen("max_batch_size = 32", "max_batch_size = 7", 1)
            + "\n[[models]]\nname = \"extra\"\nversion = \"1\"\npath = \"mlp.pt\"\nmax_batch_size = 4\ninputs = [{ dtype = \"f32\", shape = [16] }]\n"
    });
    let out = jetinfer(nats, None, &["models", "seed", "--from", &differs]).await;
    assert_refused(&out, "model mlp version 1 in the file differs");
    assert_eq!(
        revisions(nats).await,
        before,
        "a refused seed wrote something"
    );

    // declare a second version, as alice: it gets no traffic yet.
    let mlp_pt = repo_root().unwrap().join("models/out/mlp.pt");
    let declared = ok_json(
        &jetinfer(
            nats,
            None,
            &[
                "models",
                "declare",
                "mlp",
                "--version",
                "2",
                "--path",
                mlp_pt.to_str().unwrap(),
                "--input",
                "f32:16",
                "--max-batch-size",
                "8",
                "--by",
                "alice",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(declared["versions"][1]["version"], "2", "{declared}");
    assert_eq!(
        declared["versions"][1]["sha256"],
        golden_sha.as_str(),
        "computed from the file"
    );
    assert_eq!(
        declared["weights"],
        serde_json::json!({"1": 1.0}),
        "{declared}"
    );
    assert_eq!(declared["audit"]["by"], "alice", "{declared}");
    assert_eq!(
        declared["audit"]["change"], "declare version 2",
        "{declared}"
    );
    let at = declared["audit"]["at_ms"].as_u64().unwrap();
    let now = jetinfer_schemas::now_ms();
    assert!(
        at <= now && now - at < 60_000,
        "audit time {at} vs now {now}"
    );
    let r1 = declared["revision"].as_u64().unwrap();

    // Two operators read revision r1. Alice writes first; Bob's write at r1 is refused.
    let r1s = r1.to_string();
    let alice = ok_json(
        &jetinfer(
            nats,
            None,
            &[
                "models",
                "weights",
                "mlp",
                "1=0.9,2=0.1",
                "--if-revision",
                &r1s,
                "--by",
                "alice",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(
        alice["weights"],
        serde_json::json!({"1": 0.9, "2": 0.1}),
        "{alice}"
    );
    let bob = jetinfer(
        nats,
        None,
        &[
            "models",
            "default",
            "mlp",
            "2",
            "--if-revision",
            &r1s,
            "--by",
            "bob",
        ],
    )
    .await;
    assert_refused(&bob, &format!("model mlp changed since revision {r1}"));
    let r2 = alice["revision"].as_u64().unwrap();

    // Two writers at the same revision at the same time: exactly one wins.
    let r2s = r2.to_string();
    let carol = [
        "models",
        "weights",
        "mlp",
        "1=0.8,2=0.2",
        "--if-revision",
        &r2s,
        "--by",
        "carol",
    ];
    let dave = [
        "models",
        "weights",
        "mlp",
        "1=0.7,2=0.3",
        "--if-revision",
        &r2s,
        "--by",
        "dave",
    ];
    let (a, b) = tokio::join!(jetinfer(nats, None, &carol), jetinfer(nats, None, &dave));
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        wins,
        1,
        "one of two concurrent writers wins:\n{}\n{}",
        text(&a),
        text(&b)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert_refused(loser, &format!("changed since revision {r2}"));
    let now = ok_json(&jetinfer(nats, None, &["models", "show", "mlp", "--json"]).await);
    let winner = if a.status.success() {
        ("carol", 0.2)
    } else {
        ("dave", 0.3)
    };
    assert_eq!(now["audit"]["by"], winner.0, "{now}");
    assert_eq!(now["weights"]["2"], winner.1, "{now}");
    let r3 = now["revision"].as_u64().unwrap();

    // Invalid weights are refused with the reason and change nothing.
    for (weights, why) in [
        ("1=0.9,2=0.2", "sum to 110/100"),
        ("1=0.995,2=0.005", "at most two decimals"),
        ("1=0.5,7=0.5", "names version 7, which is not declared"),
        ("1:0.5", "version=weight pairs"),
    ] {
        let out = jetinfer(nats, None, &["models", "weights", "mlp", weights]).await;
        assert_refused(&out, why);
    }
    let out = jetinfer(nats, None, &["models", "default", "mlp", "9"]).await;
    assert_refused(&out, "names version 9, which is not declared");
    let unchanged = ok_json(&jetinfer(nats, None, &["models", "show", "mlp", "--json"]).await);
    assert_eq!(unchanged["revision"].as_u64(), Some(r3), "{unchanged}");

    // The audit trail: who changed what, oldest first.
    let history = ok_json(&jetinfer(nats, None, &["models", "history", "mlp", "--json"]).await);
    let trail: Vec<(String, String)> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["by"].as_str().unwrap().to_string(),
                r["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(trail.len(), 4, "{history}");
    assert!(trail[0].1.starts_with("seed from "), "{history}");
    assert_eq!(trail[1], ("alice".into(), "declare version 2".into()));
    assert_eq!(trail[2], ("alice".into(), "weights 1=0.90,2=0.10".into()));
    assert_eq!(trail[3].0, winner.0, "{history}");

    // Rollback restores the previous revision (alice's 90/10) as a new revision.
    let rolled = ok_json(
        &jetinfer(
            nats,
            None,
            &["models", "rollback", "mlp", "--by", "erin", "--json"],
        )
        .await,
    );
    assert_eq!(rolled["restored_revision"].as_u64(), Some(r2), "{rolled}");
    assert_eq!(
        rolled["weights"],
        serde_json::json!({"1": 0.9, "2": 0.1}),
        "{rolled}"
    );
    assert_eq!(rolled["audit"]["by"], "erin", "{rolled}");
    assert!(
        rolled["audit"]["change"]
            .as_str()
            .unwrap()
            .starts_with(&format!("rollback to revision {r2}")),
        "{rolled}"
    );
    assert!(rolled["revision"].as_u64().unwrap() > r3, "{rolled}");
    // A model with a single revision has nothing to roll back to.
    let out = jetinfer(nats, None, &["models", "rollback", "pair"]).await;
    assert_refused(&out, "no earlier declaration");

    // default: the atomic switch of all unversioned traffic.
    let switched =
        ok_json(&jetinfer(nats, None, &["models", "default", "mlp", "2", "--json"]).await);
    assert_eq!(switched["default_version"], "2", "{switched}");
    assert_eq!(
        switched["weights"],
        serde_json::json!({"2": 1.0}),
        "{switched}"
    );

    // Seeding a file that adds a version adds just that version.
    let adds = edited_toml(dir.path(), |t| {
        t.replacen("version = \"1\"", "version = \"3\"", 1)
    });
    let seeded =
        ok_json(&jetinfer(nats, None, &["models", "seed", "--from", &adds, "--json"]).await);
    let mlp_outcome = &seeded["models"][0];
    assert_eq!(mlp_outcome["action"], "added", "{seeded}");
    assert_eq!(
        mlp_outcome["versions"],
        serde_json::json!(["3"]),
        "{seeded}"
    );
    let mlp = ok_json(&jetinfer(nats, None, &["models", "show", "mlp", "--json"]).await);
    let versions: Vec<&str> = mlp["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2", "3"], "{mlp}");
    assert_eq!(
        mlp["default_version"], "2",
        "seeding keeps the default: {mlp}"
    );

    // The text views print too.
    let out = jetinfer(nats, None, &["models", "list"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("4 model(s) declared") && table.contains("1,2,3"),
        "{}",
        text(&out)
    );
}

/// Submits one mlp golden input as `model` (at `version`) with `--wait --json`; returns
/// the exit code, the printed result and how long it took.
async fn submit(
    stack: &LocalStack,
    input: &Path,
    model: &str,
    version: Option<&str>,
    priority: &str,
    wait_s: &str,
) -> (Option<i32>, Value, Duration) {
    let mut args = vec![
        "submit",
        "--model",
        model,
        "--priority",
        priority,
        "--input",
        input.to_str().unwrap(),
        "--wait",
        "--timeout-s",
        wait_s,
        "--json",
    ];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    let started = Instant::now();
    let out = jetinfer(&stack.nats_url(), Some(&stack.redis_url()), &args).await;
    let took = started.elapsed();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), value, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_registry_undeclared_models_and_versions_are_answered_at_once() {
    // The registry exists before the dispatcher starts: the sample models, and one
    // declared model that no worker serves.
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    ok_json(
        &jetinfer(
            &nats,
            None,
            &["models", "seed", "--from", &models_toml(), "--json"],
        )
        .await,
    );
    let mlp_pt = repo_root().unwrap().join("models/out/mlp.pt");
    ok_json(
        &jetinfer(
            &nats,
            None,
            &[
                "models",
                "declare",
                "unserved",
                "--version",
                "1",
                "--path",
                mlp_pt.to_str().unwrap(),
                "--input",
                "f32:16",
                "--max-batch-size",
                "4",
                "--json",
            ],
        )
        .await,
    );
    let stack = LocalStack::builder()
        .nats_url(nats.clone())
        .workers(1)
        .dispatcher_args(["--unknown-model-after-ms", "30000"])
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mlp.json");
    let sample = golden().samples("mlp").remove(0);
    std::fs::write(
        &input,
        serde_json::to_vec(&tensor_to_json(&sample.inputs[0])).unwrap(),
    )
    .unwrap();

    // Undeclared model and undeclared version: unknown_model at once, on every priority.
    for priority in ["p0", "p1", "p2"] {
        let (code, result, took) =
            submit(&stack, &input, "nosuchmodel", None, priority, "20").await;
        assert_eq!(code, Some(3), "{priority}: {result}");
        assert_eq!(
            result["error"]["code"], "unknown_model",
            "{priority}: {result}"
        );
        assert!(
            result["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not declared in the model registry"),
            "{result}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{priority}: answered after {took:?}"
        );

        let (code, result, took) = submit(&stack, &input, "mlp", Some("9"), priority, "20").await;
        assert_eq!(code, Some(3), "{priority}: {result}");
        assert_eq!(
            result["error"]["code"], "unknown_model",
            "{priority}: {result}"
        );
        let message = result["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("no version \"9\"") && message.contains("declared: 1"),
            "{result}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{priority}: answered after {took:?}"
        );
    }

    // Declared and served: runs as before, with or without the version.
    for version in [None, Some("1")] {
        let (code, result, _) = submit(&stack, &input, "mlp", version, "p1", "30").await;
        assert_eq!(code, Some(0), "{result}");
        assert_eq!(result["status"], "ok", "{result}");
    }

    // Declared, but no worker serves it: the job waits (no answer within 6 s).
    let (code, result, took) = submit(&stack, &input, "unserved", None, "p1", "6").await;
    assert_eq!(
        code,
        Some(2),
        "a declared model with no worker waits: {result}"
    );
    assert!(took >= Duration::from_secs(6), "{took:?}");

    // A version declared while the dispatcher runs is followed: its jobs are no longer
    // refused (they wait for a worker instead).
    ok_json(
        &jetinfer(
            &nats,
            None,
            &[
                "models",
                "declare",
                "mlp",
                "--version",
                "5",
                "--path",
                mlp_pt.to_str().unwrap(),
                "--input",
                "f32:16",
                "--max-batch-size",
                "4",
                "--json",
            ],
        )
        .await,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, result, _) = submit(&stack, &input, "mlp", Some("5"), "p1", "4").await;
    assert_eq!(
        code,
        Some(2),
        "a newly declared version waits for a worker: {result}"
    );
    drop(stack);
}

//! Hot load, switch and unload of model versions in a running worker (`--registry`),
//! over real nats-server, redis-server, dispatcher and worker processes and the mlp
//! TorchScript model (issue 12, item 2).
//!
//! The two versions of `mlp` are the same file declared twice, so every output can be
//! checked against PyTorch's golden outputs; which version ran a job is what its result's
//! `version` says.

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetinfer_devkit::golden::compare;
use jetinfer_devkit::local::{binary, repo_root, LocalStack, NatsServer};
use jetinfer_schemas::names::HEARTBEAT_SUBJECT;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{Job, Priority, Status};
use jetinfer_tests::cli::text;
use jetinfer_tests::{collect_results, golden, http, logs, run_id, ATOL, RTOL};
use serde_json::Value;

/// Runs `jetinfer ARGS` against `nats`.
async fn jetinfer(nats: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(binary("jetinfer").unwrap())
        .args(args)
        .current_dir(repo_root().unwrap())
        .env("NATS_URL", nats)
        .env("JETINFER_OPERATOR", "lifecycle-test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("jetinfer finished in time")
        .unwrap()
}

async fn ok(nats: &str, args: &[&str]) {
    let out = jetinfer(nats, args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "jetinfer {args:?}\n{}",
        text(&out)
    );
}

/// A stack on `nats` with one `--registry` worker, given `extra` arguments too, logging
/// at info (the tests read the worker's log lines).
async fn registry_stack(nats: &str, extra: &[&str]) -> LocalStack {
    LocalStack::builder()
        .nats_url(nats.to_string())
        .workers(1)
        .worker_args(["--registry"])
        .worker_args(extra.iter().copied())
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"))
}

/// Declares `mlp` at `version` (the sample model's file), optionally with a wrong sha256.
async fn declare_mlp(nats: &str, version: &str, sha256: Option<&str>) {
    let path = repo_root().unwrap().join("models/out/mlp.pt");
    let mut args = vec![
        "models",
        "declare",
        "mlp",
        "--version",
        version,
        "--path",
        path.to_str().unwrap(),
        "--input",
        "f32:16",
        "--max-batch-size",
        "32",
        "--json",
    ];
    if let Some(s) = sha256 {
        args.extend(["--sha256", s]);
    }
    ok(nats, &args).await;
}

/// The versions of `mlp` the worker's heartbeats announce, kept current in the background.
fn announced(nats: async_nats::Client) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut sub = nats.subscribe(HEARTBEAT_SUBJECT).await.unwrap();
        while let Some(msg) = sub.next().await {
            if let Ok(hb) = rmp_serde::from_slice::<Heartbeat>(&msg.payload) {
                let mut v: Vec<String> = hb
                    .models
                    .iter()
                    .filter(|m| m.name == "mlp")
                    .map(|m| m.version.clone())
                    .collect();
                v.sort();
                *out.lock().unwrap() = v;
            }
        }
    });
    seen
}

/// Waits until the heartbeats announce exactly `versions` of mlp; returns how long it took.
async fn until_announced(
    seen: &Mutex<Vec<String>>,
    versions: &[&str],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if *seen.lock().unwrap() == versions {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "heartbeats announce mlp {:?}, not {versions:?}, after {within:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One submitted job: the version it asked for (`None`: any) and when it was sent.
struct Sent {
    id: String,
    version: Option<String>,
    sample: usize,
    at: Instant,
}

fn job(id: &str, version: Option<&str>, sample: usize) -> Job<'static> {
    let samples = golden().samples("mlp");
    let mut job = Job::new(
        id.to_string(),
        "mlp".to_string(),
        samples[sample % samples.len()].inputs.clone(),
    );
    job.version = version.map(|v| v.to_string().into());
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_v1_to_v2_under_steady_load_loses_and_fails_nothing() {
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    declare_mlp(&nats, "1", None).await;
    let stack = registry_stack(&nats, &[]).await;
    let seen = announced(stack.connect_nats().await.unwrap());
    until_announced(&seen, &["1"], Duration::from_secs(30)).await;
    let client = Arc::new(stack.client().await.unwrap());
    let samples = golden().samples("mlp");

    // Steady load: a job every 5 ms, alternating unversioned and versioned; the versioned
    // ones ask for v1, and for v1 and v2 in turn once v2 is announced (`phase` 1).
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let run = run_id("switch");
    let producer = {
        let (client, stop, phase, run) = (client.clone(), stop.clone(), phase.clone(), run.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let version = match (i % 2, i % 4, phase.load(Ordering::Relaxed)) {
                    (0, _, _) => None,
                    (_, 3, 1) => Some("2"),
                    _ => Some("1"),
                };
                let id = format!("{run}-{i}");
                client
                    .submit(Priority::P1, &job(&id, version, i))
                    .await
                    .unwrap_or_else(|e| panic!("submit {id}: {e}"));
                sent.push(Sent {
                    id,
                    version: version.map(str::to_string),
                    sample: i,
                    at: Instant::now(),
                });
                i += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Load v2 beside v1: declared, loaded, warmed, announced.
    let declared_at = Instant::now();
    declare_mlp(&nats, "2", None).await;
    until_announced(&seen, &["1", "2"], Duration::from_secs(30)).await;
    let load_time = declared_at.elapsed();
    phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The switch: v2 becomes the default; unversioned jobs move to it.
    let switch_at = Instant::now();
    ok(&nats, &["models", "default", "mlp", "2", "--json"]).await;
    let written = switch_at.elapsed();
    let switch_time = loop {
        let probe = format!("{run}-probe-{}", switch_at.elapsed().as_micros());
        client
            .submit(Priority::P1, &job(&probe, None, 0))
            .await
            .unwrap();
        let got = collect_results(&client, &[probe.clone()], Duration::from_secs(10)).await;
        let r = got
            .get(&probe)
            .unwrap_or_else(|| panic!("probe {probe} has no result"));
        assert_eq!(r.status, Status::Ok, "probe failed: {:?}", r.error);
        if r.version == "2" {
            break switch_at.elapsed();
        }
        assert!(
            switch_at.elapsed() < Duration::from_secs(10),
            "unversioned jobs still run on v1 10 s after the switch"
        );
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = producer.await.unwrap();

    let ids: Vec<String> = sent.iter().map(|s| s.id.clone()).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(60)).await;
    let (mut lost, mut failed, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    let mut ran_on: HashMap<String, usize> = HashMap::new();
    for s in &sent {
        let Some(r) = results.get(&s.id) else {
            lost.push(s.id.clone());
            continue;
        };
        if r.status != Status::Ok {
            failed.push(format!("{}: {:?}", s.id, r.error));
            continue;
        }
        *ran_on.entry(r.version.clone()).or_default() += 1;
        let right_version = match &s.version {
            Some(v) => r.version == *v,
            // Settled: sent a second after the default changed, it must run on v2.
            None if s.at > switch_at + Duration::from_secs(1) => r.version == "2",
            None => r.version == "1" || r.version == "2",
        };
        let right_outputs = compare(
            &samples[s.sample % samples.len()].outputs,
            &r.outputs,
            ATOL,
            RTOL,
        )
        .is_ok();
        if !right_version || !right_outputs {
            wrong.push(format!("{} asked {:?} ran {}", s.id, s.version, r.version));
        }
    }
    println!(
        "switch under load: {} jobs, lost {}, failed {}, wrong {}, ran on {ran_on:?}; \
         v2 declared → announced {load_time:?}; default write {written:?}; \
         default write start → first unversioned v2 result {switch_time:?}",
        sent.len(),
        lost.len(),
        failed.len(),
        wrong.len()
    );
    let logs = stack.log_tails(30);
    assert!(
        lost.is_empty(),
        "lost {:?}\n{logs}",
        &lost[..lost.len().min(5)]
    );
    assert!(
        failed.is_empty(),
        "failed {:?}\n{logs}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        wrong.is_empty(),
        "wrong {:?}\n{logs}",
        &wrong[..wrong.len().min(5)]
    );
    assert!(ran_on.get("2").copied().unwrap_or(0) > 0 && ran_on.get("1").copied().unwrap_or(0) > 0);
}

/// The versions listed under `versions.mlp.<list>` in a `/readyz` body.
fn listed(ready: &Value, list: &str) -> Vec<String> {
    ready["versions"]["mlp"][list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["version"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Resident set size of a process, bytes.
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_lets_running_batches_finish_then_drops_the_version() {
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    declare_mlp(&nats, "1", None).await;
    declare_mlp(&nats, "2", None).await;
    // Every forward takes a second longer: batches are surely running when v2 is unloaded.
    let mut stack = registry_stack(
        &nats,
        &[
            "--inject-faults",
            "slow_ms=1000",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    )
    .await;
    let seen = announced(stack.connect_nats().await.unwrap());
    until_announced(&seen, &["1", "2"], Duration::from_secs(30)).await;
    let addr = http::metrics_addr(stack.workers()[0].log_path()).await;
    let pid = stack.workers()[0].pid();
    let client = stack.client().await.unwrap();
    let samples = golden().samples("mlp");

    // Unloading the default version is refused, with what to do instead.
    let out = jetinfer(&nats, &["models", "unload", "mlp", "1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("default version"),
        "{}",
        text(&out)
    );

    // 40 v2 jobs: a batch of one starts at once, the rest queue behind it (three batches,
    // a second each). Unload v2 as soon as the first result is stored.
    let run = run_id("unload");
    let ids: Vec<String> = (0..40).map(|i| format!("{run}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client
            .submit(Priority::P1, &job(id, Some("2"), i))
            .await
            .unwrap();
    }
    let first = collect_results(&client, &ids[..1], Duration::from_secs(30)).await;
    assert_eq!(
        first.len(),
        1,
        "the first v2 job ran\n{}",
        stack.log_tails(20)
    );
    let rss_before = rss(pid);
    let unload_at = Instant::now();
    ok(&nats, &["models", "unload", "mlp", "2", "--json"]).await;
    let done_before_unload = collect_results(&client, &ids, Duration::ZERO).await.len();

    // Stops being announced at once; every job handed to it finishes, on v2, correctly.
    let gone = until_announced(&seen, &["1"], Duration::from_secs(10)).await;
    let results = collect_results(&client, &ids, Duration::from_secs(60)).await;
    let drained = unload_at.elapsed();
    assert_eq!(
        results.len(),
        ids.len(),
        "lost v2 jobs\n{}",
        stack.log_tails(30)
    );
    for (i, id) in ids.iter().enumerate() {
        let r = &results[id];
        assert_eq!(r.status, Status::Ok, "{id}: {:?}", r.error);
        assert_eq!(r.version, "2", "{id}");
        compare(&samples[i % samples.len()].outputs, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    assert!(
        done_before_unload < ids.len(),
        "all v2 jobs had finished before the unload: nothing was running"
    );

    // The module is dropped (the thread logs it once it ends) and /readyz no longer has v2.
    let log_path = stack.workers()[0].log_path().to_path_buf();
    let unloaded_line = logs::wait_for_line(
        &log_path,
        Duration::from_secs(20),
        "'model unloaded' line for v2",
        |l| (l.contains("model unloaded") && l.contains("version=2")).then(|| l.to_string()),
    )
    .await;
    let rss_after = rss(pid);
    let ready = http::readyz(&addr).await;
    assert_eq!(listed(&ready, "loaded"), ["1"], "{ready}");
    assert_eq!(listed(&ready, "declared"), ["1"], "{ready}");
    assert!(listed(&ready, "unloading").is_empty(), "{ready}");
    println!(
        "unload under load: {} of {} v2 jobs were done when the unload was written, all {} stored ok; \
         no longer announced after {gone:?}, drained in {drained:?}; worker RSS {} → {} KiB \
         (CPU, a 16-wide MLP: allocator noise)\n  {unloaded_line}",
        done_before_unload,
        ids.len(),
        results.len(),
        rss_before / 1024,
        rss_after / 1024
    );

    let list = jetinfer(&nats, &["models", "list"]).await;
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("1,2(unloaded)"),
        "{}",
        text(&list)
    );

    // Wanted again: loaded again (a fresh thread reads the file), announced, serving.
    ok(&nats, &["models", "load", "mlp", "2", "--json"]).await;
    until_announced(&seen, &["1", "2"], Duration::from_secs(30)).await;
    let again = format!("{run}-reloaded");
    client
        .submit(Priority::P1, &job(&again, Some("2"), 1))
        .await
        .unwrap();
    let got = collect_results(&client, &[again.clone()], Duration::from_secs(30)).await;
    let r = got.get(&again).expect("a result from the reloaded v2");
    assert_eq!(
        (r.status, r.version.as_str()),
        (Status::Ok, "2"),
        "{:?}",
        r.error
    );

    // A version whose file does not match its sha256 is refused, visibly (log, /readyz,
    // heartbeat); v1 keeps serving.
    let mut beats = stack
        .connect_nats()
        .await
        .unwrap()
        .subscribe(HEARTBEAT_SUBJECT)
        .await
        .unwrap();
    declare_mlp(&nats, "3", Some(&"0".repeat(64))).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ready = http::readyz(&addr).await;
        if listed(&ready, "failed") == ["3"] {
            break ready;
        }
        assert!(Instant::now() < deadline, "v3 not reported failed: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = ready["versions"]["mlp"]["failed"][0]["load_error"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("sha256 mismatch"), "{ready}");
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = beats.next().await {
            let hb: Heartbeat = rmp_serde::from_slice(&msg.payload).unwrap();
            if !hb.load_errors.is_empty() {
                return hb.load_errors;
            }
        }
        panic!("heartbeat subscription ended")
    })
    .await
    .expect("a heartbeat with load_errors");
    assert_eq!(
        (refused[0].name.as_str(), refused[0].version.as_str()),
        ("mlp", "3")
    );
    assert!(refused[0].error.contains("sha256 mismatch"), "{refused:?}");
    let served = jetinfer(&nats, &["models", "served", "--json"]).await;
    let served: Value = serde_json::from_slice(&served.stdout).unwrap_or(Value::Null);
    assert_eq!(served["load_errors"][0]["version"], "3", "{served}");
    assert_eq!(ready["models_ready"], true, "{ready}");
    let probe = format!("{run}-after");
    client
        .submit(Priority::P1, &job(&probe, Some("1"), 0))
        .await
        .unwrap();
    let got = collect_results(&client, &[probe.clone()], Duration::from_secs(30)).await;
    assert_eq!(got.get(&probe).map(|r| r.status), Some(Status::Ok));
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        log.contains("model version refused"),
        "no refusal line in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_version_runs_on_every_device_of_the_worker() {
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    declare_mlp(&nats, "1", None).await;
    // Two devices (the CPU twice: two executor threads under one batcher).
    let mut stack = registry_stack(
        &nats,
        &["--devices", "cpu,cpu", "--metrics-addr", "127.0.0.1:0"],
    )
    .await;
    let addr = http::metrics_addr(stack.workers()[0].log_path()).await;
    let ready = http::readyz(&addr).await;
    assert_eq!(
        ready["versions"]["mlp"]["loaded"][0]["device"], "cpu,cpu",
        "{ready}"
    );
    assert_eq!(ready["models"][0]["device"], "cpu,cpu", "{ready}");
    let client = stack.client().await.unwrap();
    let samples = golden().samples("mlp");
    let run = run_id("devices");
    let ids: Vec<String> = (0..64).map(|i| format!("{run}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client
            .submit(Priority::P1, &job(id, None, i))
            .await
            .unwrap();
    }
    let results = collect_results(&client, &ids, Duration::from_secs(60)).await;
    assert_eq!(results.len(), ids.len(), "{}", stack.log_tails(20));
    for (i, id) in ids.iter().enumerate() {
        let r = &results[id];
        assert_eq!(
            (r.status, r.version.as_str()),
            (Status::Ok, "1"),
            "{:?}",
            r.error
        );
        compare(&samples[i % samples.len()].outputs, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}

/// Writes a TorchScript module holding a 4096 × 4096 f32 parameter (64 MiB) that takes an
/// `f32:16` input and returns it unchanged (traced with the project's PyTorch).
fn big_module(path: &std::path::Path) {
    let script = path.with_extension("py");
    std::fs::write(
        &script,
        "import sys, torch\n\
         class Big(torch.nn.Module):\n    \
             def __init__(self):\n        \
                 super().__init__()\n        \
                 self.w = torch.nn.Parameter(torch.randn(4096, 4096))\n    \
             def forward(self, x):\n        \
                 return x * (self.w[0, 0] * 0 + 1)\n\
         torch.jit.trace(Big().eval(), torch.zeros(2, 16)).save(sys.argv[1])\n",
    )
    .unwrap();
    let out = std::process::Command::new(repo_root().unwrap().join(".venv/bin/python"))
        .arg(&script)
        .arg(path)
        .output()
        .expect("running the project's Python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A field `key=N` of a log line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_64_mib_module_gives_its_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pt");
    big_module(&big);
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    declare_mlp(&nats, "1", None).await;
    ok(
        &nats,
        &[
            "models",
            "declare",
            "mlp",
            "--version",
            "big",
            "--path",
            big.to_str().unwrap(),
            "--input",
            "f32:16",
            "--max-batch-size",
            "8",
            "--json",
        ],
    )
    .await;
    let mut stack = registry_stack(&nats, &[]).await;
    let seen = announced(stack.connect_nats().await.unwrap());
    until_announced(&seen, &["1", "big"], Duration::from_secs(60)).await;
    let pid = stack.workers()[0].pid();
    let before = rss(pid);
    ok(&nats, &["models", "unload", "mlp", "big"]).await;
    until_announced(&seen, &["1"], Duration::from_secs(10)).await;
    let log_path = stack.workers()[0].log_path().to_path_buf();
    let line = logs::wait_for_line(
        &log_path,
        Duration::from_secs(20),
        "'model unloaded' line",
        |l| l.contains("model unloaded").then(|| l.to_string()),
    )
    .await;
    let after = rss(pid);
    let (in_before, in_after) = (field(&line, "rss_before"), field(&line, "rss_after"));
    println!(
        "unload of a 64 MiB module: worker RSS {} → {} MiB (from /proc); the worker's own \
         figures {} → {} MiB",
        before >> 20,
        after >> 20,
        in_before >> 20,
        in_after >> 20
    );
    // The parameter is one 64 MiB allocation, which the allocator maps and unmaps whole.
    assert!(
        in_after + (32 << 20) < in_before,
        "the worker's RSS did not drop by 32 MiB: {line}"
    );
}

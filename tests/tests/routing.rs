//! Traffic weights on a real stack: one worker serves mlp versions 1 and 2 (the same
//! TorchScript file twice, so outputs agree), the registry declares both, and the
//! dispatcher routes jobs that name no version by the weights:
//!
//! - 90/10 over 10,000 unversioned jobs: the split of the results' `version` is within
//!   ±2 percentage points, and every job ran on the version the routing function
//!   (`ModelDecl::routed_version`) gives for its id; the dispatcher counts them in
//!   `jetinfer_dispatcher_routed_total{model,version}`;
//! - a weight change (90/10 → 10/90) while jobs stream in: every job's version is the one
//!   the old or the new declaration gives for its id, both occur, and jobs published after
//!   the change follow the new one;
//! - a sticky key (`meta.user`): every user's jobs run on one version, jobs without the
//!   field are routed by id, and the dispatcher's job spans carry the routed version;
//! - a job for an undeclared model or version is answered `unknown_model` at once on P0,
//!   P1 and P2 (`--unknown-model-after-ms` is 30 s, P0's deadline 5 s).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetinfer_client::Client;
use jetinfer_devkit::golden::compare;
use jetinfer_devkit::local::{binary, repo_root, LocalStack, NatsServer};
use jetinfer_schemas::registry::{decode_decl, ModelDecl, REGISTRY_BUCKET};
use jetinfer_schemas::{ErrorCode, Job, JobResult, Priority, Status};
use jetinfer_tests::otlp::{ReceivedSpan, Receiver};
use jetinfer_tests::{collect_results, golden, run_id, ATOL, RTOL};

/// Runs `jetinfer ARGS` against `nats`; panics unless it succeeds.
async fn jetinfer(nats: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(binary("jetinfer").unwrap())
        .args(args)
        .current_dir(repo_root().unwrap())
        .env("NATS_URL", nats)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "jetinfer {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A models file listing mlp versions 1 and 2 on the CPU (the same file).
fn two_versions_toml(dir: &Path) -> String {
    let mlp = repo_root().unwrap().join("models/out/mlp.pt");
    let entry = |v: &str| {
        format!(
            "[[models]]\nname = \"mlp\"\nversion = \"{v}\"\npath = \"{}\"\ndevice = \"cpu\"\n\
             dtype = \"f32\"\nmax_batch_size = 32\nmax_queue_delay_ms = 2\n\
             inputs = [{{ dtype = \"f32\", shape = [16] }}]\n\n",
            mlp.display()
        )
    };
    let path = dir.join("models.toml");
    std::fs::write(&path, entry("1") + &entry("2")).unwrap();
    path.to_string_lossy().into_owned()
}

/// The registry seeded with mlp 1 and 2 at `weights`, and a stack whose one worker serves
/// both; its spans go to `otlp` when given.
async fn start(dir: &Path, weights: &[&str], otlp: Option<&Receiver>) -> (NatsServer, LocalStack) {
    let server = NatsServer::start().expect("nats-server");
    let nats = server.url();
    let toml = two_versions_toml(dir);
    jetinfer(&nats, &["models", "seed", "--from", &toml]).await;
    let mut args = vec!["models", "weights", "mlp"];
    args.extend(weights);
    jetinfer(&nats, &args).await;
    let mut builder = LocalStack::builder();
    if let Some(receiver) = otlp {
        builder = builder
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_TRACES_SAMPLER", "parentbased_always_on");
    }
    let stack = builder
        .nats_url(nats)
        .models(&toml)
        .workers(1)
        .dispatcher_args([
            "--unknown-model-after-ms",
            "30000",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    (server, stack)
}

/// mlp's declaration as the registry holds it now.
async fn declaration(stack: &LocalStack) -> ModelDecl {
    let nats = stack.connect_nats().await.unwrap();
    let kv = async_nats::jetstream::new(nats)
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    let bytes = kv.get("mlp").await.unwrap().expect("mlp is declared");
    decode_decl(&bytes).unwrap()
}

/// Unversioned mlp jobs with ids `<prefix>-<i>` for `range`, `meta` from `meta_of`, on
/// mlp's golden samples in turn. The result cache is off: every job runs its version.
fn jobs(
    prefix: &str,
    range: std::ops::Range<usize>,
    meta_of: impl Fn(usize) -> Option<BTreeMap<String, String>>,
) -> Vec<Job<'static>> {
    let samples = golden().samples("mlp");
    range
        .map(|i| {
            let inputs = samples[i % samples.len()].inputs.clone();
            let mut job = Job::new(format!("{prefix}-{i}"), "mlp", inputs);
            job.meta = meta_of(i);
            job.cache = Some(false);
            job
        })
        .collect()
}

async fn submit_all(client: &Client, jobs: &[Job<'static>], priority: Priority) {
    futures::stream::iter(jobs)
        .map(|job| async move {
            client
                .submit(priority, job)
                .await
                .unwrap_or_else(|e| panic!("submit {}: {e}", job.id))
        })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await;
}

/// Every job's result, by id, each `ok` with PyTorch's outputs (whichever version ran:
/// both are the same file).
async fn results(
    client: &Client,
    jobs: &[Job<'static>],
    timeout: Duration,
) -> HashMap<String, JobResult<'static>> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let found = collect_results(client, &ids, timeout).await;
    assert_eq!(found.len(), ids.len(), "results missing");
    let samples = golden().samples("mlp");
    for job in jobs {
        let r = &found[&*job.id];
        assert_eq!(r.status, Status::Ok, "{} failed: {:?}", r.id, r.error);
        let sample = samples
            .iter()
            .find(|s| s.inputs == job.inputs)
            .expect("a golden sample");
        compare(&sample.outputs, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|e| panic!("{}: output differs from PyTorch: {e}", job.id));
    }
    found
}

/// The metrics endpoint the dispatcher logged.
fn metrics_addr(stack: &mut LocalStack) -> String {
    let log = stack.dispatcher().unwrap().log();
    log.lines()
        .filter(|l| l.contains("serving metrics and health"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| Some(v["fields"]["addr"].as_str()?.to_string()))
        .expect("the dispatcher logs its metrics address")
}

/// The value of one series in the dispatcher's /metrics.
async fn metric(addr: &str, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_unversioned_jobs_and_a_change_applies_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut stack) = start(dir.path(), &["1=0.9,2=0.1"], None).await;
    let client = stack.client().await.unwrap();
    let run = run_id("routing");

    // Unknown model and unknown version: unknown_model at once, on every priority.
    let sample = golden().samples("mlp").remove(0);
    for p in Priority::ALL {
        let mut named = Job::new(format!("{run}-v9-{p}"), "mlp", sample.inputs.clone());
        named.version = Some("9".into());
        let ghost = Job::new(format!("{run}-ghost-{p}"), "ghost", sample.inputs.clone());
        for job in [named, ghost] {
            let started = Instant::now();
            let r = client
                .submit_and_wait(p, &job, Duration::from_secs(20))
                .await
                .unwrap();
            let e = r.error.as_ref().unwrap_or_else(|| panic!("{p}: {r:?}"));
            assert_eq!(e.code, ErrorCode::UnknownModel, "{p} {}: {e:?}", job.id);
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{p} {}: answered after {:?}",
                job.id,
                started.elapsed()
            );
        }
    }

    // 90/10 over 10,000 unversioned jobs.
    let decl = declaration(&stack).await;
    let n = 10_000;
    let split = jobs(&format!("{run}-split"), 0..n, |_| None);
    let started = Instant::now();
    submit_all(&client, &split, Priority::P1).await;
    let got = results(&client, &split, Duration::from_secs(180)).await;
    let took = started.elapsed();
    let mut on_2 = 0;
    for job in &split {
        let version = &got[&*job.id].version;
        let want = decl.routed_version(&job.id, None).unwrap();
        assert_eq!(
            version, &want,
            "{} ran on {version}, routed to {want}",
            job.id
        );
        on_2 += usize::from(version == "2");
    }
    let share = on_2 as f64 / n as f64;
    eprintln!(
        "{n} jobs in {took:?}: {on_2} on version 2 ({:.2} %)",
        share * 100.0
    );
    assert!((share - 0.10).abs() <= 0.02, "version 2 got {share}");
    let addr = metrics_addr(&mut stack);
    let counted = metric(
        &addr,
        r#"jetinfer_dispatcher_routed_total{model="mlp",version="2"}"#,
    )
    .await;
    assert_eq!(counted, Some(on_2 as f64), "routed_total of version 2");

    // A weight change while jobs stream in: each job follows the old or the new weights.
    let old = decl;
    let stream = jobs(&format!("{run}-change"), 0..3_000, |_| None);
    let (first, rest) = stream.split_at(1_000);
    submit_all(&client, first, Priority::P2).await;
    let nats = stack.nats_url().to_string();
    let (_, changed_at) = tokio::join!(submit_all(&client, &rest[..1_000], Priority::P2), async {
        jetinfer(&nats, &["models", "weights", "mlp", "1=0.1,2=0.9"]).await;
        Instant::now()
    });
    // Published well after the change: must all follow the new weights.
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(changed_at.elapsed())).await;
    let late = &rest[1_000..];
    submit_all(&client, late, Priority::P2).await;
    let new = declaration(&stack).await;
    assert_eq!(new.weights["2"], 90);
    let got = results(&client, &stream, Duration::from_secs(120)).await;
    let (mut only_old, mut only_new) = (0, 0);
    for job in &stream {
        let version = got[&*job.id].version.as_str();
        let by_old = old.routed_version(&job.id, None).unwrap();
        let by_new = new.routed_version(&job.id, None).unwrap();
        assert!(
            version == by_old || version == by_new,
            "{} ran on {version}: old weights say {by_old}, new say {by_new}",
            job.id
        );
        if by_old != by_new {
            if version == by_old {
                only_old += 1;
            } else {
                only_new += 1;
            }
        }
    }
    for job in late {
        let want = new.routed_version(&job.id, None).unwrap();
        assert_eq!(got[&*job.id].version, want, "{} after the change", job.id);
    }
    eprintln!(
        "during the change: {only_old} jobs by the old weights only, {only_new} by the new only"
    );
    assert!(
        only_old > 0 && only_new > 0,
        "{only_old} old, {only_new} new"
    );
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_key_keeps_each_user_on_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let weights = ["1=0.5,2=0.5", "--sticky-key", "user"];
    let (_server, mut stack) = start(dir.path(), &weights, Some(&receiver)).await;
    let client = stack.client().await.unwrap();
    let run = run_id("sticky");
    let decl = declaration(&stack).await;
    assert_eq!(decl.sticky_key.as_deref(), Some("user"));

    // 400 jobs of 20 users, interleaved, on every priority; some jobs without the field.
    let user = |i: usize| format!("user-{}", i % 20);
    let with_user = jobs(&run, 0..400, |i| {
        Some(BTreeMap::from([("user".to_string(), user(i))]))
    });
    let anonymous = jobs(&format!("{run}-anon"), 0..200, |_| None);
    for (i, p) in Priority::ALL.into_iter().enumerate() {
        let part: Vec<Job<'static>> = with_user.iter().skip(i).step_by(3).cloned().collect();
        submit_all(&client, &part, p).await;
    }
    submit_all(&client, &anonymous, Priority::P1).await;
    let got = results(&client, &with_user, Duration::from_secs(120)).await;
    let mut by_user: HashMap<String, HashSet<String>> = HashMap::new();
    for (i, job) in with_user.iter().enumerate() {
        let version = got[&*job.id].version.clone();
        assert_eq!(
            Some(version.as_str()),
            decl.routed_version(&job.id, job.meta.as_ref()).as_deref()
        );
        by_user.entry(user(i)).or_default().insert(version);
    }
    for (u, versions) in &by_user {
        assert_eq!(versions.len(), 1, "{u} saw versions {versions:?}");
    }
    let seen: HashSet<&String> = by_user.values().flatten().collect();
    assert_eq!(seen.len(), 2, "20 users at 50/50 meet both versions");
    // Jobs without the field are routed by their id: both versions.
    let got = results(&client, &anonymous, Duration::from_secs(60)).await;
    let seen: HashSet<&str> = got.values().map(|r| r.version.as_str()).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for job in &anonymous {
        assert_eq!(
            Some(got[&*job.id].version.as_str()),
            decl.routed_version(&job.id, None).as_deref()
        );
    }

    // The dispatcher's job spans carry the routed version (they end at the ack).
    let ids: HashSet<&str> = anonymous.iter().map(|j| &*j.id).collect();
    let job_spans = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.role == "dispatcher.job")
            .filter(|s| {
                s.attributes
                    .get("messaging.message.id")
                    .is_some_and(|id| ids.contains(id.as_str()))
            })
            .cloned()
            .collect()
    };
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| job_spans(s).len() >= ids.len())
        .await;
    let spans = job_spans(&spans);
    assert!(
        spans.len() >= ids.len(),
        "{} job spans of {}",
        spans.len(),
        ids.len()
    );
    for span in &spans {
        let id = &span.attributes["messaging.message.id"];
        assert_eq!(
            span.attributes.get("jetinfer.version"),
            Some(&got[id].version),
            "span of {id}"
        );
    }
    stack.stop();
}

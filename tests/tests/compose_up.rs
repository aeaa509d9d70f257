//! compose.yaml started for real, on a Docker engine without a registry: the CPU profile's
//! images are built from local parts (`scripts/compose-local-images.sh`: a debootstrapped
//! Debian base, the host-built binaries, the .venv's nats-server and torch libraries),
//! `compose --profile cpu up` starts nats, redis, the dispatcher and two `worker-cpu`
//! replicas serving the sample models through the models bind mount (`JETINFER_MODELS_DIR`,
//! `JETINFER_MODELS`), and jobs published from the host with the Rust client come back with
//! PyTorch's outputs. The stack runs with the credentials `scripts/compose-secrets.sh`
//! generates (into a folder of the test's own, `JETINFER_SECRETS_DIR`): the test checks that
//! NATS and Redis refuse a client without them or with a wrong password, that the producer's
//! Redis user cannot write a result, that the dispatcher and the workers are logged in to
//! NATS as their own roles, that running the script again keeps every password, and it
//! publishes as the producer, with the URLs of the script's `producer.env`. Every host port
//! is one Docker chooses on 127.0.0.1, so the test runs beside anything else; the project is
//! torn down (`down -v`) when the guard drops, also when the test fails. Without a Docker
//! engine or a compose tool the test says why and returns.
//!
//! Run alone: `cargo test -p jetinfer-tests --test compose_up -- --nocapture`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jetinfer_client::{Client, StoreConfig};
use jetinfer_devkit::local::{binary, repo_root};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id};

#[path = "compose_up/access.rs"]
mod access;
use access::{check_access, Secrets};

/// How long the stack may take to become healthy (models load and warm up on 2 cores).
const HEALTHY_WITHIN: Duration = Duration::from_secs(180);
/// Replicas of `worker-cpu`: more than one proves workers publish no fixed host port.
const WORKERS: usize = 2;

/// `docker compose` (v2) or `docker-compose` (v1, Debian's), whichever answers.
fn compose_tool() -> Result<Vec<String>, String> {
    let answers = |argv: &[&str]| {
        Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !answers(&["docker", "info"]) {
        return Err("no Docker engine answers `docker info`".into());
    }
    for argv in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let mut probe = argv.to_vec();
        probe.push("version");
        if answers(&probe) {
            return Ok(argv.iter().map(|s| s.to_string()).collect());
        }
    }
    Err("neither `docker compose` nor `docker-compose` is installed".into())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The local images, as the `NAME=value` lines the script prints.
fn build_local_images(root: &Path) -> Vec<(String, String)> {
    let bin_dir = binary("jetinfer-worker")
        .expect("jetinfer-worker built")
        .parent()
        .expect("a binary's folder")
        .to_path_buf();
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root.join("scripts/compose-local-images.sh"))
        .env("JETINFER_LOCAL_BIN_DIR", &bin_dir)
        .output()
        .expect("running scripts/compose-local-images.sh");
    assert!(
        out.status.success(),
        "scripts/compose-local-images.sh failed:\n{}",
        text(&out)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("local images ready in {:.0?}", started.elapsed());
    let vars: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for name in [
        "JETINFER_NATS_IMAGE",
        "JETINFER_REDIS_IMAGE",
        "JETINFER_DISPATCHER_IMAGE",
        "JETINFER_WORKER_IMAGE",
    ] {
        assert!(
            vars.iter().any(|(k, _)| k == name),
            "the script printed no {name}"
        );
    }
    vars
}

/// One compose project; `down -v` when dropped.
struct Project {
    tool: Vec<String>,
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tool[0]);
        cmd.args(&self.tool[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file)
            .args(["--profile", "cpu"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        // What the caller's shell may hold must not change which stack starts.
        for var in [
            "COMPOSE_FILE",
            "COMPOSE_PROFILES",
            "COMPOSE_PROJECT_NAME",
            "JETINFER_MODELS",
            "JETINFER_MODELS_DIR",
            "JETINFER_SECRETS_DIR",
        ] {
            if !self.env.iter().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    /// Runs `compose <args>`; its output, or a panic with it.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("running compose");
        assert!(
            out.status.success(),
            "compose {} failed:\n{}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host address of a service's container port (`port --index`, 1-based).
    fn port(&self, service: &str, index: usize, port: u16) -> String {
        let idx = format!("--index={index}");
        let out = self.run(&["port", &idx, service, &port.to_string()]);
        out.trim().to_string()
    }

    /// The containers of a service.
    fn containers(&self, service: &str) -> Vec<String> {
        self.run(&["ps", "-q", service])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self.command(&["logs", "--no-color", "--tail=40"]).output() {
                eprintln!("==> compose logs of {} <==\n{}", self.name, text(&out));
            }
        }
        match self
            .command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("compose down of {} failed:\n{}", self.name, text(&out)),
            Err(e) => eprintln!("compose down of {}: {e}", self.name),
        }
    }
}

/// `docker inspect` of containers with a Go template, one line each.
fn inspect(ids: &[String], format: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", format])
        .args(ids)
        .output()
        .expect("running docker inspect");
    assert!(out.status.success(), "docker inspect: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until every container of `services` reports `healthy`; fails at once on a
/// container that restarted or exited.
fn wait_healthy(project: &Project, services: &[(&str, usize)]) {
    let started = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for &(service, replicas) in services {
            let ids = project.containers(service);
            assert_eq!(ids.len(), replicas, "containers of {service}: {ids:?}");
            let states = inspect(
                &ids,
                "{{.Name}} {{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            );
            for state in states {
                let f: Vec<&str> = state.split_whitespace().collect();
                assert!(
                    f.get(1) == Some(&"running") && f.get(2) == Some(&"0"),
                    "{service} is not running or has restarted: {state}"
                );
                if f.get(3) != Some(&"healthy") {
                    waiting.push(state);
                }
            }
        }
        if waiting.is_empty() {
            eprintln!("stack healthy in {:.0?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < HEALTHY_WITHIN,
            "not healthy within {HEALTHY_WITHIN:?}: {waiting:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// GET `path` from `addr` over plain HTTP/1.0; the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.contains(" 200 "), "GET {addr}{path}: {head}");
    body.to_string()
}

/// A metric's value in Prometheus text (a series without labels).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn root_dir() -> PathBuf {
    repo_root().expect("repository root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_starts_from_local_images_and_serves_jobs_from_the_host() {
    let tool = match compose_tool() {
        Ok(tool) => tool,
        Err(why) => {
            eprintln!("SKIPPED compose_up: {why}");
            return;
        }
    };
    let root = root_dir();
    let mut env = build_local_images(&root);
    // Declared before the project, so it outlives the project's `down`.
    let secrets = Secrets::generate(&root);
    env.push((
        "JETINFER_SECRETS_DIR".to_string(),
        secrets.path().display().to_string(),
    ));
    // Docker picks every host port (on 127.0.0.1); the models come through the bind mount,
    // as a user's own models would.
    for (k, v) in [
        ("JETINFER_NATS_PORT", "0".to_string()),
        ("JETINFER_NATS_MONITOR_PORT", "0".to_string()),
        ("JETINFER_REDIS_PORT", "0".to_string()),
        ("JETINFER_DISPATCHER_PORT", "0".to_string()),
        (
            "JETINFER_MODELS_DIR",
            root.join("models/out").display().to_string(),
        ),
        ("JETINFER_MODELS", "/models/models.toml".to_string()),
    ] {
        env.push((k.to_string(), v));
    }
    let project = Project {
        tool,
        name: format!("jetinfer-test-{:08x}", rand::random::<u32>()),
        file: root.join("compose.yaml"),
        env,
    };
    eprintln!(
        "compose project {} ({})",
        project.name,
        project.tool.join(" ")
    );

    let started = Instant::now();
    let scale = format!("worker-cpu={WORKERS}");
    // Named services: Jaeger and Prometheus have no local image, and nothing needs them.
    project.run(&["up", "-d", "--no-build", "--scale", &scale, "worker-cpu"]);
    wait_healthy(
        &project,
        &[
            ("nats", 1),
            ("redis", 1),
            ("dispatcher", 1),
            ("worker-cpu", WORKERS),
        ],
    );

    // Published on 127.0.0.1 only, and restarted by the engine when they fail.
    let nats = project.port("nats", 1, 4222);
    let redis = project.port("redis", 1, 6379);
    let monitor = project.port("nats", 1, 8222);
    let dispatcher = project.port("dispatcher", 1, 9464);
    let mut workers = Vec::new();
    for i in 1..=WORKERS {
        workers.push(project.port("worker-cpu", i, 9464));
    }
    for addr in [&nats, &monitor, &redis, &dispatcher]
        .into_iter()
        .chain(&workers)
    {
        assert!(
            addr.starts_with("127.0.0.1:"),
            "published beyond 127.0.0.1: {addr}"
        );
    }
    let mut ids = project.containers("worker-cpu");
    ids.extend(project.containers("dispatcher"));
    for policy in inspect(&ids, "{{.HostConfig.RestartPolicy.Name}}") {
        assert_eq!(policy, "unless-stopped");
    }
    // The dispatcher's image holds no libtorch, and its binary links none.
    let libs = project.run(&[
        "exec",
        "-T",
        "dispatcher",
        "sh",
        "-c",
        "find / -xdev -name 'libtorch*' -o -name 'libc10*'; ldd /usr/local/bin/jetinfer-dispatcher",
    ]);
    assert!(
        libs.contains("libc.so") && !libs.contains("torch") && !libs.contains("libc10"),
        "the dispatcher's image or binary has libtorch:\n{libs}"
    );
    // Each replica is healthy on its own host port, serving the bind-mounted models.
    for w in &workers {
        let health = http_get(w, "/healthz");
        assert!(health.contains("imgmean"), "worker {w} /healthz: {health}");
    }
    // The dispatcher sees both replicas.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(&dispatcher, "/metrics");
        if metric(&metrics, "jetinfer_workers") == Some(WORKERS as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dispatcher does not see {WORKERS} workers: jetinfer_workers = {:?}",
            metric(&metrics, "jetinfer_workers")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    check_access(&project, &secrets, &nats, &redis, &monitor).await;

    // Jobs from the host, as the producer with the script's URLs: every sample model,
    // imgmean's inputs large enough to travel by reference through Redis.
    let nats_url = secrets.var("producer.env", "NATS_URL");
    let redis_url = secrets.var("producer.env", "REDIS_URL");
    let client = Client::connect(&nats_url, &StoreConfig::new(redis_url.clone()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connecting to {} and {} as the producer: {e}",
                jetinfer_client::redact_url(&nats_url),
                jetinfer_client::redact_url(&redis_url)
            )
        });
    let run = run_id("compose");
    let mut jobs = Vec::new();
    for (model, priority) in [
        ("mlp", Priority::P0),
        ("pair", Priority::P1),
        ("seqpool", Priority::P2),
        ("imgmean", Priority::P1),
    ] {
        jobs.extend(publish_samples(&client, model, 50, priority, &run).await);
    }
    let results = assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    let served_by: std::collections::BTreeSet<&str> =
        results.values().map(|r| r.worker.as_str()).collect();
    eprintln!(
        "{} jobs correct, served by {served_by:?}; up to here {:.0?}",
        results.len(),
        started.elapsed()
    );
}

//! The least-privilege configuration shipped in deploy/: nats-server runs with
//! `deploy/nats/jetinfer.conf` (passwords from the environment, as in production) and
//! redis-server with `deploy/redis/users.acl` rendered by `deploy/redis/render-acl.sh`.
//!
//! - The whole pipeline runs with each process under its own role (dispatcher, one worker,
//!   a producer through the client library, the harness as operator): jobs inline and by
//!   reference, cache hits and a job the dispatcher answers itself all come out right, and
//!   neither server refused anything along the way (no permission violation in the
//!   nats-server log, an empty Redis `ACL LOG`). That is what proves the subjects and keys
//!   in the files are the ones the code uses.
//! - A producer cannot publish run requests to a worker, nor write a result, a cache entry
//!   or a failure count; a worker cannot listen on another worker's run subject; and no role
//!   but the worker writes the cache, none but the dispatcher counts failures. Each refusal
//!   is checked against a role that is allowed the same thing, so a widened file fails here.
//!
//! The rendered ACL file gets one line more than the shipped one: a `test-admin` user that
//! reads `ACL LOG` and checks keys, which no shipped role may.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use jetinfer_client::{Client, ResultWrite, StoreConfig, StoreError};
use jetinfer_devkit::local::{
    binary, repo_root, wait_for_workers, LocalStack, NatsServer, ProcessUrls, RedisServer,
};
use jetinfer_schemas::partitions::{partition_consumer, partition_stream};
use jetinfer_schemas::{ErrorCode, Job, Priority, Status, Tensor};
use jetinfer_tests::{assert_all_correct, golden, publish_samples, run_id};
use tokio::sync::mpsc;

/// NATS users of the shipped config, each with the environment variable of its password.
const NATS_USERS: [(&str, &str); 5] = [
    ("producer", "JETINFER_NATS_PRODUCER_PASSWORD"),
    ("dispatcher", "JETINFER_NATS_DISPATCHER_PASSWORD"),
    ("operator", "JETINFER_NATS_OPERATOR_PASSWORD"),
    ("worker-0", "JETINFER_NATS_WORKER_0_PASSWORD"),
    ("worker-1", "JETINFER_NATS_WORKER_1_PASSWORD"),
];

/// Redis users of the shipped ACL file, each with the environment variable of its password.
const REDIS_USERS: [(&str, &str); 4] = [
    ("jetinfer-producer", "JETINFER_REDIS_PRODUCER_PASSWORD"),
    ("jetinfer-worker", "JETINFER_REDIS_WORKER_PASSWORD"),
    ("jetinfer-dispatcher", "JETINFER_REDIS_DISPATCHER_PASSWORD"),
    ("jetinfer-operator", "JETINFER_REDIS_OPERATOR_PASSWORD"),
];

/// The test's own Redis user, appended to the rendered file.
const ADMIN: &str = "test-admin";

/// A fresh password (hex, so it needs no escaping in URLs).
fn password() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// nats-server and redis-server running the shipped files, and every role's password.
struct Deployment {
    nats: NatsServer,
    redis: RedisServer,
    nats_passwords: BTreeMap<&'static str, String>,
    redis_passwords: BTreeMap<&'static str, String>,
    _acl_dir: tempfile::TempDir,
}

impl Deployment {
    fn start() -> Deployment {
        let root = repo_root().unwrap();
        let nats_passwords: BTreeMap<_, _> =
            NATS_USERS.iter().map(|(u, _)| (*u, password())).collect();
        let nats_env: Vec<(&str, String)> = NATS_USERS
            .iter()
            .map(|(u, var)| (*var, nats_passwords[u].clone()))
            .collect();
        let config = root.join("deploy/nats/jetinfer.conf");
        let nats =
            NatsServer::start_with_env(["-c".to_string(), config.display().to_string()], nats_env)
                .unwrap_or_else(|e| panic!("nats-server with {}: {e}", config.display()));

        let redis_passwords: BTreeMap<_, _> = REDIS_USERS
            .iter()
            .map(|(u, _)| (*u, password()))
            .chain([(ADMIN, password())])
            .collect();
        let acl_dir = tempfile::tempdir().unwrap();
        let acl = acl_dir.path().join("users.acl");
        render_acl(&root, &redis_passwords, &acl);
        let redis =
            RedisServer::start_with_args(["--aclfile".to_string(), acl.display().to_string()])
                .unwrap_or_else(|e| panic!("redis-server with the rendered ACL file: {e}"));
        Deployment {
            nats,
            redis,
            nats_passwords,
            redis_passwords,
            _acl_dir: acl_dir,
        }
    }

    /// `nats://<user>:<password>@127.0.0.1:<port>`.
    fn nats_url(&self, user: &str) -> String {
        format!(
            "nats://{user}:{}@127.0.0.1:{}",
            self.nats_passwords[user],
            self.nats.port()
        )
    }

    /// `redis+unix://<socket>?user=<user>&pass=<password>`.
    fn redis_url(&self, user: &str) -> String {
        format!(
            "redis+unix://{}?user={user}&pass={}",
            self.redis.socket_path().display(),
            self.redis_passwords[user]
        )
    }

    fn urls(&self, nats_user: &str, redis_user: &str) -> ProcessUrls {
        ProcessUrls::new(self.nats_url(nats_user), self.redis_url(redis_user))
    }

    /// The store as one Redis user sees it.
    fn store(&self, redis_user: &str) -> jetinfer_client::ResultStore {
        jetinfer_client::ResultStore::new(&StoreConfig::new(self.redis_url(redis_user))).unwrap()
    }

    /// A NATS connection as `user` that reports the server's errors (permission
    /// violations arrive as asynchronous `-ERR`s, not as failed calls).
    async fn nats_watched(
        &self,
        user: &str,
    ) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.to_string(),
            self.nats_passwords[user].clone(),
        )
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(format!("nats://127.0.0.1:{}", self.nats.port()))
        .await
        .unwrap_or_else(|e| panic!("connecting as {user}: {e}"));
        (client, rx)
    }

    /// `redis-cli` as the test's admin user.
    fn admin_cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(self.redis.socket_path())
            .args([
                "--user",
                ADMIN,
                "--pass",
                &self.redis_passwords[ADMIN],
                "--no-auth-warning",
            ])
            .args(args)
            .output()
            .expect("running redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Lines of the nats-server log that report a refused publish or subscription.
    fn nats_violations(&self) -> Vec<String> {
        self.nats
            .log()
            .lines()
            // `[ERR] … - "JETINFER/user:producer" - Publish Violation - Subject "…"`
            .filter(|l| l.contains("Publish Violation") || l.contains("Subscription Violation"))
            .map(str::to_string)
            .collect()
    }

    /// Whether nats-server logs a violation naming `subject` within a few seconds: it
    /// answers the client's `-ERR` before its log line reaches the file, so a read right
    /// after the client saw the refusal may not find the line yet.
    async fn logs_violation_of(&self, subject: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if self.nats_violations().iter().any(|l| l.contains(subject)) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs the shipped render script on the shipped ACL file with the passwords in the
/// environment, and appends the test's admin user.
fn render_acl(root: &Path, passwords: &BTreeMap<&'static str, String>, out: &Path) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root.join("deploy/redis/render-acl.sh"))
        .arg(root.join("deploy/redis/users.acl"));
    for (user, var) in REDIS_USERS {
        cmd.env(var, &passwords[user]);
    }
    let rendered = cmd.output().expect("running render-acl.sh");
    assert!(
        rendered.status.success(),
        "render-acl.sh: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut text = String::from_utf8(rendered.stdout).unwrap();
    assert!(!text.contains("sha256:"), "a placeholder is left:\n{text}");
    text.push_str(&format!(
        "user {ADMIN} on >{} ~* &* +@all\n",
        passwords[ADMIN]
    ));
    std::fs::write(out, text).unwrap();
}

/// Asserts that `result` is Redis's refusal for lack of permission (`NOPERM`).
fn assert_noperm<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        // redis-rs shows the server's `NOPERM` as `NoPerm`.
        Err(StoreError::Redis(e)) if e.to_string().to_uppercase().contains("NOPERM") => {}
        other => panic!("{what}: expected NOPERM, got {other:?}"),
    }
}

/// Waits `window` for a message on `sub`; `None` when nothing came.
async fn next_within(
    sub: &mut async_nats::Subscriber,
    window: Duration,
) -> Option<async_nats::Message> {
    tokio::time::timeout(window, sub.next())
        .await
        .ok()
        .flatten()
}

/// Waits for a server error that names a permission violation on `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, errors.recv()).await {
            Ok(Some(e))
                if e.to_lowercase().contains("permissions violation") && e.contains(subject) =>
            {
                return e
            }
            Ok(Some(_)) => continue,
            _ => panic!("no permissions violation for {subject} within 5 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_each_process_under_its_own_role() {
    let dep = Deployment::start();
    let mut stack = LocalStack::builder()
        .nats_url(dep.nats_url("operator"))
        .redis_url(dep.redis_url("jetinfer-operator"))
        .dispatcher_urls(
            dep.nats_url("dispatcher"),
            dep.redis_url("jetinfer-dispatcher"),
        )
        // A job for a model nobody serves is answered by the dispatcher after 1 s.
        // A job sent again after 1 s is not de-duplicated by JetStream but reaches the
        // dispatcher, which compares it with the stored result.
        // Two partition streams per priority: the rights on partition streams are in the
        // shipped files too (the producer reads the count, the dispatcher pulls both).
        .dispatcher_args([
            "--unknown-model-after-ms",
            "1000",
            "--duplicate-window-s",
            "1",
            "--partitions",
            &PARTITIONS.to_string(),
        ])
        .workers(0)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the dispatcher as `dispatcher`: {e}"));
    assert_eq!(stack.next_worker_id(), "worker-0");
    stack
        .start_worker_with_urls(
            dep.urls("worker-0", "jetinfer-worker"),
            Vec::<String>::new(),
        )
        .unwrap();
    let operator = stack.connect_nats().await.unwrap();
    if let Err(e) = wait_for_workers(&operator, 1, Duration::from_secs(120)).await {
        panic!("worker-0 did not start: {e}\n{}", stack.log_tails(30));
    }

    let producer = Client::connect(
        &dep.nats_url("producer"),
        &StoreConfig::new(dep.redis_url("jetinfer-producer")),
    )
    .await
    .unwrap();
    let run = run_id("perms");
    // Inline jobs, and jobs whose inputs go through Redis (the producer's SET, the
    // worker's MGET and UNLINK).
    let by_ref = producer.clone().with_inline_limit(0);
    let round = |n: u32| {
        let (producer, by_ref, run) = (&producer, &by_ref, &run);
        async move {
            let mut jobs = publish_samples(
                producer,
                "pair",
                24,
                Priority::P1,
                &format!("{run}-{n}-inline"),
            )
            .await;
            jobs.extend(
                publish_samples(
                    by_ref,
                    "imgmean",
                    12,
                    Priority::P0,
                    &format!("{run}-{n}-ref"),
                )
                .await,
            );
            let results = assert_all_correct(producer, &jobs, Duration::from_secs(60)).await;
            (jobs, results)
        }
    };
    round(1).await;
    // The same samples again: now the cache answers (the worker's cache writes and reads).
    let (jobs, results) = round(2).await;
    assert!(
        results.values().any(|r| r.cached),
        "no job was answered from the cache: the worker's cache reads and writes went unchecked"
    );
    // Completion notices reach the producer (`jetinfer.done.>`).
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    producer
        .wait_many(&ids, Duration::from_secs(10))
        .await
        .unwrap();

    // The same job sent again, past the duplicate window: its worker finds the stored
    // result, and the dispatcher reads it, finds it is the job's own, and acks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = &jobs[0];
    let inputs = golden().samples("pair")[0].inputs.clone();
    let resent = Job::new(again.id.clone(), "pair".to_string(), inputs);
    let before = producer.get(&again.id).await.unwrap().unwrap();
    producer.submit(Priority::P1, &resent).await.unwrap();
    wait_until_stream_empty(&ops_nats(&stack).await, Priority::P1).await;
    assert_eq!(producer.get(&again.id).await.unwrap().unwrap(), before);

    // A job the dispatcher answers itself: its result and notice are the dispatcher's.
    let orphan_id = format!("{run}-orphan");
    let orphan = Job::new(
        orphan_id.clone(),
        "no-such-model".to_string(),
        vec![Tensor::from_f32(vec![2], &[1.0, 2.0])],
    );
    producer.submit(Priority::P1, &orphan).await.unwrap();
    let answered = producer
        .wait(&orphan_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(answered.status, Status::Error);
    assert_eq!(
        answered.error.as_ref().map(|e| e.code),
        Some(ErrorCode::UnknownModel),
        "{answered:?}"
    );

    // What the operator reads: queue depths, consumers, dead letters.
    let ops = stack.client().await.unwrap();
    for p in Priority::ALL {
        for k in 0..PARTITIONS {
            let mut stream = ops
                .jetstream()
                .get_stream(partition_stream(p, k))
                .await
                .unwrap();
            let stored = stream.info().await.unwrap().state.last_sequence;
            // The producer read the count: its P0 and P1 jobs went to both partitions.
            assert!(
                p == Priority::P2 || stored > 0,
                "{p}, partition {k}: no job"
            );
            stream
                .consumer_info(&partition_consumer(p, k))
                .await
                .unwrap();
        }
    }
    assert!(ops.dead_letters().await.unwrap().is_empty());
    assert!(ops.get(&jobs[0].id).await.unwrap().is_some());

    // Nothing was refused along the way: every subject and key the processes used is in
    // the shipped files.
    stack.check_alive("the end of the test").unwrap();
    assert_nothing_refused(&dep, &stack);
    stack.stop();
}

/// The operator's NATS connection.
async fn ops_nats(stack: &LocalStack) -> async_nats::Client {
    stack.connect_nats().await.unwrap()
}

/// Partition streams per priority in the pipeline test.
const PARTITIONS: u16 = 2;

/// Waits until priority `p`'s streams hold no job (WorkQueue: acked or terminated ones leave).
async fn wait_until_stream_empty(nats: &async_nats::Client, p: Priority) {
    let js = async_nats::jetstream::new(nats.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut messages = 0;
        for k in 0..PARTITIONS {
            let mut stream = js.get_stream(partition_stream(p, k)).await.unwrap();
            messages += stream.info().await.unwrap().state.messages;
        }
        if messages == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{p}'s stream still holds jobs after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Neither server refused anything, and no process logged a refusal.
fn assert_nothing_refused(dep: &Deployment, stack: &LocalStack) {
    assert_eq!(
        dep.nats_violations(),
        Vec::<String>::new(),
        "nats-server refused something"
    );
    let acl_log = dep.admin_cli(&["ACL", "LOG"]);
    assert!(
        acl_log.trim().is_empty(),
        "Redis refused something:\n{acl_log}"
    );
    for entry in std::fs::read_dir(stack.log_dir()).unwrap() {
        let path = entry.unwrap().path();
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("permissions violation") || l.contains("noperm")
            })
            .collect();
        assert!(
            refusals.is_empty(),
            "{} logs refusals:\n{}",
            path.display(),
            refusals.join("\n")
        );
    }
}

#[tokio::test]
async fn a_producer_cannot_run_jobs_on_a_worker_nor_write_results_cache_or_failures() {
    let dep = Deployment::start();
    let run_subject = jetinfer_schemas::names::worker_run_subject("worker-0");

    // NATS: worker-0 listens on its run subject; the dispatcher reaches it, the producer
    // is refused.
    let (worker, _) = dep.nats_watched("worker-0").await;
    let mut runs = worker.subscribe(run_subject.clone()).await.unwrap();
    worker.flush().await.unwrap();
    let (dispatcher, _) = dep.nats_watched("dispatcher").await;
    dispatcher
        .publish(run_subject.clone(), "from the dispatcher".into())
        .await
        .unwrap();
    dispatcher.flush().await.unwrap();
    let got = next_within(&mut runs, Duration::from_secs(5)).await;
    assert_eq!(
        got.map(|m| m.payload),
        Some("from the dispatcher".into()),
        "the dispatcher's run request did not arrive"
    );
    let (producer, mut errors) = dep.nats_watched("producer").await;
    producer
        .publish(run_subject.clone(), "forged".into())
        .await
        .unwrap();
    producer.flush().await.unwrap();
    println!("producer: {}", violation(&mut errors, &run_subject).await);
    // The server logs it too: the pipeline test's clean log means something.
    assert!(
        dep.logs_violation_of(&run_subject).await,
        "nats-server did not log the refusal: {:?}",
        dep.nats_violations()
    );
    assert!(
        next_within(&mut runs, Duration::from_secs(1))
            .await
            .is_none(),
        "a producer's message reached the worker's run subject"
    );
    // Nor may it forge heartbeats (that would draw jobs to a worker of its own).
    let forged = jetinfer_schemas::names::heartbeat_subject("worker-0");
    producer
        .publish(forged.clone(), "forged".into())
        .await
        .unwrap();
    println!("producer: {}", violation(&mut errors, &forged).await);

    // Redis: what a producer may do…
    let store = dep.store("jetinfer-producer");
    let id = "perms-forged";
    store
        .put_inputs(id, b"inputs", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.get(id).await.unwrap().is_none());
    // …and what it may not: a result, a cache entry, a failure count, or reading inputs.
    let forged = ResultWrite {
        id,
        bytes: b"forged".to_vec(),
        drop_inputs: false,
    };
    assert_noperm(
        "producer SET result",
        store.put_results(&[forged], &[]).await,
    );
    let cache_key = store.keys().cache("pair", "1", &"0".repeat(64));
    assert_noperm(
        "producer SET cache",
        store
            .put_results(&[], &[(cache_key.clone(), b"forged".to_vec())])
            .await,
    );
    assert_noperm("producer INCR failures", store.add_failures(&[id]).await);
    assert_noperm("producer MGET inputs", store.get_inputs(&[id]).await);
    let keys = store.keys();
    let exists = dep.admin_cli(&["EXISTS", &keys.result(id), &cache_key, &keys.failures(id)]);
    assert_eq!(exists.trim(), "0", "a refused write left a key");

    // The same writes are allowed to the roles that own them, so the refusals above are
    // the file's doing, not a broken connection.
    let worker_store = dep.store("jetinfer-worker");
    let write = ResultWrite {
        id,
        bytes: b"real".to_vec(),
        drop_inputs: true,
    };
    let stored = worker_store
        .put_results(&[write], &[(cache_key, b"real".to_vec())])
        .await
        .unwrap();
    assert_eq!(stored, [true]);
    let counts = dep
        .store("jetinfer-dispatcher")
        .add_failures(&[id])
        .await
        .unwrap();
    assert_eq!(counts, [1]);
}

#[tokio::test]
async fn a_worker_cannot_listen_on_another_workers_run_subject() {
    let dep = Deployment::start();
    let other = jetinfer_schemas::names::worker_run_subject("worker-1");

    let (worker0, mut errors) = dep.nats_watched("worker-0").await;
    let mut stolen = worker0.subscribe(other.clone()).await.unwrap();
    println!("worker-0: {}", violation(&mut errors, &other).await);
    let everything = "jetinfer.worker.*.run";
    let mut wildcard = worker0.subscribe(everything).await.unwrap();
    println!("worker-0: {}", violation(&mut errors, everything).await);
    // Nor can it take jobs from the queue or publish them.
    worker0
        .publish("jetinfer.jobs.p0.mlp", "job".into())
        .await
        .unwrap();
    println!(
        "worker-0: {}",
        violation(&mut errors, "jetinfer.jobs.p0.mlp").await
    );

    // Nor announce itself as another worker (runs sent to a made-up or stolen id would
    // count lost runs towards `poison`).
    let posing = jetinfer_schemas::names::heartbeat_subject("worker-1");
    worker0.publish(posing.clone(), "hb".into()).await.unwrap();
    println!("worker-0: {}", violation(&mut errors, &posing).await);

    // worker-1 gets its run request; worker-0 sees none of it.
    let (worker1, _) = dep.nats_watched("worker-1").await;
    let mut own = worker1.subscribe(other.clone()).await.unwrap();
    worker1.flush().await.unwrap();
    let (dispatcher, _) = dep.nats_watched("dispatcher").await;
    dispatcher
        .publish(other.clone(), "for worker-1".into())
        .await
        .unwrap();
    dispatcher.flush().await.unwrap();
    let got = next_within(&mut own, Duration::from_secs(5)).await;
    assert_eq!(got.map(|m| m.payload), Some("for worker-1".into()));
    assert!(next_within(&mut stolen, Duration::from_millis(500))
        .await
        .is_none());
    assert!(next_within(&mut wildcard, Duration::from_millis(500))
        .await
        .is_none());

    // In Redis, a worker writes results and the cache but never a failure count, and
    // neither the dispatcher nor an operator writes the cache.
    let id = "perms-worker";
    assert_noperm(
        "worker INCR failures",
        dep.store("jetinfer-worker").add_failures(&[id]).await,
    );
    assert_noperm(
        "operator INCR failures",
        dep.store("jetinfer-operator").add_failures(&[id]).await,
    );
    let cache_key = jetinfer_schemas::Keys::default().cache("pair", "1", &"1".repeat(64));
    for user in ["jetinfer-dispatcher", "jetinfer-operator"] {
        assert_noperm(
            &format!("{user} SET cache"),
            dep.store(user)
                .put_results(&[], &[(cache_key.clone(), b"x".to_vec())])
                .await,
        );
    }
}

/// `jetinfer` (the CLI) as the operator.
fn jetinfer_as_operator(dep: &Deployment, args: &[&str]) -> String {
    let out = std::process::Command::new(binary("jetinfer").unwrap())
        .args(["--nats-url", &dep.nats_url("operator")])
        .args(["--redis-url", &dep.redis_url("jetinfer-operator")])
        .args(args)
        .output()
        .expect("running jetinfer");
    assert!(
        out.status.success(),
        "jetinfer {args:?} as operator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_dead_letters_and_their_replay_work_under_their_roles() {
    let dep = Deployment::start();
    // Two lost runs make a job poison: worker-0 and worker-1 (the users the shipped file
    // has) each die running it.
    let mut stack = LocalStack::builder()
        .nats_url(dep.nats_url("operator"))
        .redis_url(dep.redis_url("jetinfer-operator"))
        .dispatcher_urls(
            dep.nats_url("dispatcher"),
            dep.redis_url("jetinfer-dispatcher"),
        )
        .dispatcher_args(["--max-attempts", "2", "--heartbeat-timeout-ms", "2000"])
        .worker_args(["--inject-faults", "sticky_on=-777"])
        .workers(0)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the dispatcher as `dispatcher`: {e}"));
    let operator = stack.connect_nats().await.unwrap();
    let producer = Client::connect(
        &dep.nats_url("producer"),
        &StoreConfig::new(dep.redis_url("jetinfer-producer")),
    )
    .await
    .unwrap();
    let id = format!("{}-poison", run_id("perms"));
    let mut inputs = golden().samples("mlp")[0].inputs.clone();
    let mut values = inputs[0].to_f32_vec();
    values[0] = -777.0;
    inputs[0] = Tensor::from_f32(inputs[0].shape.clone(), &values);
    producer
        .submit(Priority::P1, &Job::new(id.clone(), "mlp", inputs))
        .await
        .unwrap();

    // Each run kills its worker: start the next one, as its own user, until it is answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let result = loop {
        if let Some(r) = producer.get(&id).await.unwrap() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison job was never answered\n{}",
            stack.log_tails(30)
        );
        let running = stack.workers().iter_mut().any(|w| w.is_running());
        if !running {
            let next = stack.next_worker_id();
            assert!(
                dep.nats_passwords.contains_key(next.as_str()),
                "{next} has no NATS user, yet the job is still not poison\n{}",
                stack.log_tails(30)
            );
            stack
                .start_worker_with_urls(dep.urls(&next, "jetinfer-worker"), Vec::<String>::new())
                .unwrap();
            if let Err(e) = wait_for_workers(&operator, 1, Duration::from_secs(60)).await {
                panic!("{next} did not start: {e}\n{}", stack.log_tails(30));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(result.error_code(), Some(ErrorCode::Poison), "{result:?}");

    // The operator lists and replays it (reads the dead-letter stream, deletes the result
    // and failure count, publishes the job again, deletes the dead letter).
    let listed = jetinfer_as_operator(&dep, &["dlq", "list"]);
    assert!(
        listed.contains(&id),
        "dlq list does not show {id}:\n{listed}"
    );
    let replayed = jetinfer_as_operator(&dep, &["dlq", "replay", &id]);
    assert!(replayed.contains("1 dead letter(s) replayed"), "{replayed}");
    assert!(
        producer.get(&id).await.unwrap().is_none(),
        "replay kept the poison result"
    );
    let stats = jetinfer_as_operator(&dep, &["stats", "--listen-s", "0.5"]);
    assert!(stats.contains("JETINFER_P1"), "{stats}");

    // Stop before the replayed job kills anything else, then look for refusals: a dead
    // worker's own log may end in its injected crash, which is no refusal.
    stack.stop();
    assert_nothing_refused(&dep, &stack);
}

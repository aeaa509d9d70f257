//! Results across a Redis primary failover (issue 13, item 3). jetinfer reaches Redis
//! through three Sentinels (`redis+sentinel://…/jetinfer`) with `--redis-wait-replicas 1`
//! (a result counts as stored only once a replica holds it). Under steady load the primary
//! is SIGKILLed, or demoted by `SENTINEL FAILOVER` (its old connections then answer
//! `READONLY`) → every job gets exactly one correct result (lost 0, wrong 0), every result
//! read before the failover is byte-identical after it, and the time until results flow
//! again is reported. A third test shows the `WAIT`: with the only replica stopped, a
//! finished job is not acknowledged and runs again until the replica is back.
//!
//! Real processes throughout: redis-servers and Sentinels ([`RedisSentinel`]), nats-server,
//! the dispatcher and a worker; outputs are compared with PyTorch's golden outputs.

use std::collections::HashMap;
use std::time::Duration;

use jetinfer_client::{Client, ResultStore, ResultWrite, StoreConfig, StoreError};
use jetinfer_devkit::golden::Sample;
use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_schemas::{now_ms, Job, Priority};
use jetinfer_tests::load::{is_wrong, ran_twice, wait_for_executions};
use jetinfer_tests::sentinel::RedisSentinel;
use jetinfer_tests::{collect_results, golden, run_id};

/// Jobs published in all, at [`RATE`] per second: ten seconds of steady load.
const JOBS: usize = 400;
const RATE: f64 = 40.0;
/// The failover starts once this many jobs ran: load flows, most jobs are still to come.
const FAILOVER_AFTER: usize = 100;
/// The longest acceptable time from the failover's start to the next stored result.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// How the primary goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// SIGKILL: the Sentinels notice after `down-after-milliseconds` and promote a replica.
    Kill,
    /// `SENTINEL FAILOVER`: the primary is demoted to a replica and keeps running, so the
    /// pool's connections to it answer `READONLY` until they are replaced.
    Demote,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_redis_primary_loses_and_changes_no_result() {
    failover(How::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_and_changes_no_result() {
    failover(How::Demote).await;
}

/// Under steady load, takes the primary away (`how`) and checks every job and every
/// result read before.
async fn failover(how: How) {
    // Two replicas: after the primary is gone, the new primary still has one replica to
    // satisfy `WAIT 1` (with one, results would wait for the old primary to come back).
    let mut redis = RedisSentinel::start(2)
        .await
        .unwrap_or_else(|e| panic!("starting Redis with Sentinel: {e}"));
    let log_dir = repo_root()
        .unwrap()
        .join("target/redis-failover-logs")
        .join(format!("{how:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&log_dir);
    let stack = LocalStack::builder()
        .redis_url(redis.url())
        .workers(1)
        .worker_args(["--record-executions"])
        .env("JETINFER_REDIS_WAIT_REPLICAS", "1")
        .env("RUST_LOG", "info")
        .log_dir(&log_dir)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting jetinfer on Redis Sentinel: {e}"));
    let client = stack.client().await.expect("client through Sentinel");

    let samples = golden().samples("mlp");
    assert!(!samples.is_empty(), "no golden samples for mlp");
    let run = run_id(&format!("redis-{how:?}").to_lowercase());
    let ids: Vec<String> = (0..JOBS).map(|i| format!("{run}-{i}")).collect();
    let load = tokio::spawn(publish_steadily(client.clone(), samples.clone(), run));

    wait_for_executions(&client, FAILOVER_AFTER, Duration::from_secs(60)).await;
    let before = read_all(&client, &ids).await;
    // What was read is on both replicas before the primary goes: the check below is then
    // about what a failover does to replicated results. (A result is read from the primary
    // between its SET and the worker's WAIT only within the replication lag; see
    // docs/reliability.md.)
    let synced = redis
        .replicated(2, Duration::from_secs(5))
        .await
        .expect("WAIT on the primary");
    assert_eq!(
        synced, 2,
        "the replicas did not catch up before the failover"
    );
    let old = redis.primary_port().await.expect("the primary");
    let started = tokio::time::Instant::now();
    match how {
        How::Kill => redis.kill(old),
        How::Demote => redis.failover().await.expect("SENTINEL FAILOVER"),
    }
    let new = redis
        .wait_for_new_primary(old, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("no new primary: {e}\n{}", redis.logs()));
    let promoted_ms = started.elapsed().as_millis();

    // Results flow again: the first result stored after the new primary took over.
    let mut first_count = None;
    let recovery_ms = loop {
        if let Ok(now) = client.store().get_many_raw(&ids).await {
            let count = now.iter().flatten().count();
            match first_count {
                None => first_count = Some(count),
                Some(first) if count > first => break started.elapsed().as_millis(),
                Some(_) => {}
            }
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "no new result within {RECOVERY_BOUND:?} of the failover (logs in {})",
            log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    load.await.expect("publishing task");
    let results = collect_results(&client, &ids, Duration::from_secs(120)).await;
    let after = read_all(&client, &ids).await;
    let lost: Vec<&String> = ids.iter().filter(|id| !results.contains_key(*id)).collect();
    let wrong: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| is_wrong(&results, id, &samples[i % samples.len()]))
        .map(|(_, id)| id)
        .collect();
    let changed: Vec<&String> = before
        .iter()
        .filter(|(id, bytes)| after.get(*id) != Some(*bytes))
        .map(|(id, _)| id)
        .collect();
    let executions = client.store().executions().await.unwrap_or_default();
    let reruns = ran_twice(&executions, &ids).len();
    eprintln!(
        "redis failover ({how:?}): primary port {old} -> {new}; results {} of {JOBS}, lost {}, \
         wrong {}, read before the failover {}, changed since {}, jobs run more than once \
         {reruns}; failover start -> new primary {promoted_ms} ms, -> next result stored \
         {recovery_ms} ms",
        results.len(),
        lost.len(),
        wrong.len(),
        before.len(),
        changed.len(),
    );
    assert!(
        lost.is_empty(),
        "lost jobs, e.g. {:?} (logs in {})",
        &lost[..lost.len().min(5)],
        log_dir.display()
    );
    assert!(
        wrong.is_empty(),
        "wrong results, e.g. {}: {:?}",
        wrong[0],
        results[wrong[0]].error
    );
    assert!(
        changed.is_empty(),
        "results read before the failover changed or vanished, e.g. {:?}",
        &changed[..changed.len().min(5)]
    );
    assert!(
        before.len() >= FAILOVER_AFTER / 2,
        "too few results before the failover"
    );

    // The old primary serves again as a replica of the new one.
    if how == How::Kill {
        redis
            .restart(old)
            .await
            .expect("restarting the old primary");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while redis.role(old).await.as_deref() != Some("slave") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old primary did not become a replica: {:?}",
            redis.role(old).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--redis-wait-replicas 1` with the only replica stopped (SIGSTOP): the worker's results
/// reach the primary but no replica, so the jobs are not acknowledged and run again; once
/// the replica is back, each is acknowledged and the runs stop. Without the WAIT each job
/// would run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_no_replica_acknowledged_is_not_acknowledged() {
    let mut redis = RedisSentinel::start(1)
        .await
        .unwrap_or_else(|e| panic!("starting Redis with Sentinel: {e}"));
    let stack = LocalStack::builder()
        .redis_url(redis.url())
        .workers(1)
        .worker_args(["--record-executions"])
        .env("JETINFER_REDIS_WAIT_REPLICAS", "1")
        .env("JETINFER_REDIS_WAIT_TIMEOUT_MS", "200")
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting jetinfer on Redis Sentinel: {e}"));
    let client = stack.client().await.expect("client through Sentinel");
    let replica = redis.data_ports()[1];
    redis.pause(replica, true);

    let samples = golden().samples("mlp");
    let run = run_id("redis-wait");
    let ids: Vec<String> = (0..3).map(|i| format!("{run}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut job = Job::new(id.clone(), "mlp", samples[i % samples.len()].inputs.clone());
        job.cache = Some(false);
        job.deadline_ms = Some(now_ms() + 3_600_000);
        client.submit(Priority::P1, &job).await.expect("publish");
    }
    // Every job ran, was not acknowledged, and ran again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = client.store().executions().await.unwrap_or_default();
        if ids.iter().all(|id| runs.get(id).is_some_and(|&n| n >= 2)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs were not run again while no replica acknowledged their results: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    redis.pause(replica, false);
    let results = collect_results(&client, &ids, Duration::from_secs(30)).await;
    assert_eq!(
        results.len(),
        ids.len(),
        "results missing after the replica came back"
    );
    // Acknowledged now: the run counts settle.
    let mut settled = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = client.store().executions().await.unwrap_or_default();
        if runs == settled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs kept running after the replica came back: {runs:?}"
        );
        settled = runs;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!("runs per job while the replica was stopped and after: {settled:?}");
}

/// A malformed `redis+sentinel://` URL is refused before anything connects, with a typed
/// error naming the problem; a well-formed one reaches the primary (writes and reads), and
/// `WAIT` reports a write fewer replicas hold than asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_urls_are_checked_and_lead_to_the_primary() {
    let malformed = [
        ("redis+sentinel:///jetinfer", "at least one sentinel host"),
        (
            "redis+sentinel://h1:26379,,h2/jetinfer",
            "empty sentinel host",
        ),
        (
            "redis+sentinel://h1:port/jetinfer",
            "sentinel port \"port\" of \"h1\"",
        ),
        ("redis+sentinel://h1:26379", "master name"),
        ("redis+sentinel://h1/jetinfer/zero", "database \"zero\""),
        (
            "redis+sentinel://u:secret@h1:0/jetinfer",
            "sentinel port \"0\"",
        ),
    ];
    for (url, words) in malformed {
        match ResultStore::new(&StoreConfig::new(url)) {
            Err(StoreError::SentinelUrl(e)) => {
                let text = e.to_string();
                assert!(text.contains(words), "{url}: {text}");
                assert!(!text.contains("secret"), "{url}: {text}");
            }
            Err(e) => panic!("{url}: not a Sentinel URL error: {e}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    let redis = RedisSentinel::start(1)
        .await
        .unwrap_or_else(|e| panic!("starting Redis with Sentinel: {e}"));
    let store = match ResultStore::connect(&StoreConfig::new(redis.url())).await {
        Ok(store) => store,
        Err(e) => panic!("connecting through Sentinel: {e}"),
    };
    store
        .check()
        .await
        .expect("the primary answers through Sentinel");
    let write = |id: &'static str| ResultWrite {
        id,
        bytes: id.as_bytes().to_vec(),
        drop_inputs: false,
    };
    let stored = store.put_results(&[write("sentinel-a")], &[]).await;
    assert_eq!(stored.expect("SET NX through Sentinel"), vec![true]);
    let raw = store
        .get_raw("sentinel-a")
        .await
        .expect("GET through Sentinel");
    assert_eq!(raw.as_deref(), Some(&b"sentinel-a"[..]));

    // One replica: WAIT 1 is met, WAIT 2 is not (and says so).
    let mut config = StoreConfig::new(redis.url());
    config.wait_replicas = 1;
    let one = ResultStore::new(&config).unwrap_or_else(|e| panic!("{e}"));
    let stored = one.put_results(&[write("sentinel-b")], &[]).await;
    assert_eq!(stored.expect("WAIT 1 with one replica"), vec![true]);
    config.wait_replicas = 2;
    config.wait_timeout = Duration::from_millis(300);
    let two = ResultStore::new(&config).unwrap_or_else(|e| panic!("{e}"));
    match two.put_results(&[write("sentinel-c")], &[]).await {
        Err(StoreError::NotReplicated { acked, wanted, .. }) => {
            assert_eq!((acked, wanted), (1, 2));
        }
        other => panic!("WAIT 2 with one replica: {other:?}"),
    }
    // A re-run finds the result there already and is still only acknowledged by WAIT.
    match two.put_results(&[write("sentinel-c")], &[]).await {
        Err(StoreError::NotReplicated { acked: 1, .. }) => {}
        other => panic!("WAIT 2 again: {other:?}"),
    }

    // Nor does a lookup count a result that has not reached enough replicas: the
    // dispatcher acks, and a worker skips a job, on that answer.
    match two.exists_many(&["sentinel-c"]).await {
        Err(StoreError::NotReplicated { acked: 1, .. }) => {}
        other => panic!("EXISTS with WAIT 2: {other:?}"),
    }
    assert_eq!(
        one.exists_many(&["sentinel-c", "nowhere"])
            .await
            .expect("EXISTS with WAIT 1"),
        vec![true, false]
    );

    // A master name the Sentinels do not monitor: nothing to connect to, said so.
    let unknown = redis.url().replace("/jetinfer", "/elsewhere");
    let store = ResultStore::new(&StoreConfig::new(&unknown)).unwrap_or_else(|e| panic!("{e}"));
    let err = store.check().await.expect_err("no primary named elsewhere");
    assert!(err.to_string().contains("elsewhere"), "{err}");
}

/// Every stored result among `ids`, raw.
async fn read_all(client: &Client, ids: &[String]) -> HashMap<String, Vec<u8>> {
    let raw = client
        .store()
        .get_many_raw(ids)
        .await
        .expect("reading results through Sentinel");
    ids.iter()
        .zip(raw)
        .filter_map(|(id, r)| Some((id.clone(), r?)))
        .collect()
}

/// Publishes [`JOBS`] golden `mlp` jobs at P1, [`RATE`] per second (NATS is not part of
/// the failover, so one publish each suffices).
async fn publish_steadily(client: Client, samples: Vec<Sample>, run: String) {
    let start = tokio::time::Instant::now();
    for i in 0..JOBS {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / RATE)).await;
        let mut job = Job::new(
            format!("{run}-{i}"),
            "mlp",
            samples[i % samples.len()].inputs.clone(),
        );
        // The samples repeat: a cache hit would skip the model (and the result store).
        job.cache = Some(false);
        // This test measures loss, not expiry (P1's default deadline is 30 s).
        job.deadline_ms = Some(now_ms() + 3_600_000);
        client
            .submit(Priority::P1, &job)
            .await
            .unwrap_or_else(|e| panic!("submit {}: {e}", job.id));
    }
}

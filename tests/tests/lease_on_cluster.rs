//! The dispatcher lease on a 3-node NATS cluster: two `--lease` dispatchers with
//! `--replicas 3` (R3 streams and an R3 lease bucket) and one worker, under steady load.
//! The lease bucket exists already with one copy, as a single-server deployment leaves it:
//! the dispatchers raise it to three.
//!
//! 1. `kill -9` of the active dispatcher → the standby takes over when the key expires;
//!    the killed one is started again (as a supervisor would) and waits as a standby.
//! 2. The NATS node the active dispatcher is connected to is killed, after the lease
//!    bucket's Raft leader was moved onto it too (the worst case: the connection and the
//!    lease's leader go at once, and renewals fail for a whole election) → whichever
//!    dispatcher holds the lease afterwards, never two at once; one that lost it exits
//!    non-zero and is started again.
//!
//! Throughout, every job gets one correct result (lost = 0), no two dispatchers are proven
//! active at the same moment (`jetinfer_dispatcher_active`, tests/src/watch.rs), and the
//! worker never holds more jobs than its slots.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use jetinfer_client::Client;
use jetinfer_devkit::local::{binary, repo_root, LocalStack, Process};
use jetinfer_schemas::now_ms;
use jetinfer_tests::cluster::NatsCluster;
use jetinfer_tests::http::metrics_addr;
use jetinfer_tests::load::{is_wrong, publish_load, ran_twice, Load, Published};
use jetinfer_tests::watch::{try_get, wait_readyz, Fleet};
use jetinfer_tests::{collect_results, golden};

const RATE: f64 = 40.0;
/// At most 60 s of load, whatever the elections take.
const MAX_JOBS: usize = 2_400;
/// Steady load before each fault and after the fleet is whole again.
const BETWEEN: Duration = Duration::from_secs(4);
const LEASE_STREAM: &str = "KV_JETINFER_LEASES";

/// A dispatcher process and its metrics address.
struct Dispatcher {
    id: &'static str,
    process: Process,
    addr: String,
    incarnation: u32,
}

/// The lease TTL, ms: 3000 (the default), or `LEASE_TTL_MS` to measure another.
fn ttl_ms() -> String {
    std::env::var("LEASE_TTL_MS").unwrap_or_else(|_| "3000".into())
}

async fn start(id: &'static str, incarnation: u32, urls: (&str, &str), logs: &Path) -> Dispatcher {
    let ttl = ttl_ms();
    let args = [
        "--nats-url",
        urls.0,
        "--redis-url",
        urls.1,
        "--id",
        id,
        "--metrics-addr",
        "127.0.0.1:0",
        "--lease",
        "--lease-ttl-ms",
        ttl.as_str(),
        "--ack-wait-ms",
        "4000",
        "--heartbeat-timeout-ms",
        "3000",
        "--replicas",
        "3",
        "--stream-max-bytes",
        "268435456",
    ];
    let log = logs.join(format!("{id}.{incarnation}.log"));
    let program = binary("jetinfer-dispatcher").unwrap();
    let process = Process::start(id, program, args, [("RUST_LOG", "info")], &log).unwrap();
    let addr = metrics_addr(&log).await;
    Dispatcher {
        id,
        process,
        addr,
        incarnation,
    }
}

/// Acts as the dispatchers' supervisor until one of them is ready (active) and the other
/// runs: a dispatcher that exited (lost its lease) is started again. Returns the index of
/// the active one and the ids of those that exited meanwhile, with their exit statuses.
async fn until_one_active(
    ds: &mut [Dispatcher],
    fleet: &Fleet,
    urls: (&str, &str),
    logs: &Path,
    limit: Duration,
) -> (usize, Vec<String>) {
    let start = Instant::now();
    let mut exits = Vec::new();
    loop {
        for d in ds.iter_mut() {
            if let Some(status) = d.process.exit_status() {
                exits.push(format!("{} {status}", d.id));
                *d = self::start(d.id, d.incarnation + 1, urls, logs).await;
                fleet.dispatcher(d.id, &d.addr);
            }
        }
        for (i, d) in ds.iter().enumerate() {
            if let Some((200, _)) = try_get(&d.addr, "/readyz").await {
                return (i, exits);
            }
        }
        assert!(
            start.elapsed() < limit,
            "no dispatcher active within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until dispatcher `d` says it is a standby of `active`.
async fn wait_standby(d: &Dispatcher, active: &str) {
    let word = format!("standby, active is {active}");
    let what = format!("{} a standby of {active}", d.id);
    wait_readyz(&d.addr, Duration::from_secs(30), &what, |s, doc| {
        s == 503 && doc["lease"] == word.as_str()
    })
    .await;
}

/// The node leading `stream`, once one is elected.
async fn leader(js: &jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    s.info().await.ok()?.cluster.clone()?.leader
}

/// Asks `stream`'s leader to step down until `node` leads it.
async fn move_leader(client: &Client, stream: &str, node: &str) {
    let js = client.jetstream();
    // Each step-down picks one of the other nodes: under load a request may also go
    // unanswered, so try many times (the test failed once in ~10 runs with 12).
    for _ in 0..40 {
        let Some(current) = leader(js, stream).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if current == node {
            return;
        }
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
        let _ = client.nats().request(subject, "".into()).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while leader(js, stream).await.is_none_or(|l| l == current) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("{stream}'s leader did not move to {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_on_a_cluster_keeps_one_active_dispatcher_through_kills() {
    let mut cluster = NatsCluster::start(3)
        .await
        .unwrap_or_else(|e| panic!("starting the NATS cluster: {e}"));
    let logs: PathBuf = repo_root().unwrap().join("target/cluster-logs/lease");
    let _ = std::fs::remove_dir_all(&logs);
    let mut stack = LocalStack::builder()
        .nats_url(cluster.urls())
        .dispatcher(false)
        .workers(0)
        .worker_args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--record-executions",
            "--inject-faults",
            "slow_ms=150",
        ])
        .env("RUST_LOG", "info")
        .log_dir(&logs)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting Redis: {e}"));
    let (nats_urls, redis_url) = (cluster.urls(), stack.redis_url().to_string());
    let urls = (nats_urls.as_str(), redis_url.as_str());
    let fleet = Fleet::new();
    let nats = stack.connect_nats().await.unwrap();
    jetstream::new(nats)
        .create_key_value(jetstream::kv::Config {
            bucket: "JETINFER_LEASES".into(),
            history: 1,
            max_age: Duration::from_millis(ttl_ms().parse().unwrap()),
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .expect("a one-copy lease bucket");

    // d-a first, so that it takes the lease; then its standby d-b.
    let mut ds = vec![start("d-a", 0, urls, &logs).await];
    fleet.dispatcher("d-a", &ds[0].addr);
    until_one_active(&mut ds, &fleet, urls, &logs, Duration::from_secs(60)).await;
    ds.push(start("d-b", 0, urls, &logs).await);
    fleet.dispatcher("d-b", &ds[1].addr);
    wait_standby(&ds[1], "d-a").await;
    stack.start_worker(Vec::<String>::new()).unwrap();
    let worker_log = stack.workers()[0].log_path().to_path_buf();
    let worker_addr = metrics_addr(&worker_log).await;
    let started = Instant::now();
    while !matches!(try_get(&worker_addr, "/readyz").await, Some((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker is not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.worker("worker-0", &worker_addr);
    let watch = fleet.watch();

    let client = stack.client().await.unwrap();
    let js = client.jetstream().clone();
    // Raised to three copies by the dispatchers, each with a follower on the other nodes.
    let started = Instant::now();
    loop {
        let mut stream = js.get_stream(LEASE_STREAM).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        let followers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
        if info.config.num_replicas == 3 && followers == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lease bucket: {} replicas, cluster {:?}",
            info.config.num_replicas,
            info.cluster
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let samples = golden().samples("mlp");
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(publish_load(
        client.clone(),
        samples.clone(),
        stop_load.clone(),
        Load {
            test: "lease-cluster",
            rate: RATE,
            max_jobs: MAX_JOBS,
            retry_for: Some(Duration::from_secs(60)),
        },
    ));
    tokio::time::sleep(BETWEEN).await;

    // 1. kill -9 of the active dispatcher: the standby takes over once the key expires.
    ds[0].process.kill();
    let killed = Instant::now();
    let dispatcher_killed_ms = now_ms();
    while !matches!(try_get(&ds[1].addr, "/readyz").await, Some((200, _))) {
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "the standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed.elapsed();
    // Its supervisor starts the killed one again: a standby now.
    ds[0] = start("d-a", 1, urls, &logs).await;
    fleet.dispatcher("d-a", &ds[0].addr);
    wait_standby(&ds[0], "d-b").await;
    tokio::time::sleep(BETWEEN).await;

    // 2. The node holding the active one's connection and the lease's Raft leader.
    let node = cluster
        .node_of_client("d-b")
        .await
        .expect("d-b's connection on some node");
    move_leader(&client, LEASE_STREAM, &node).await;
    let p1_leader = leader(&js, "JETINFER_P1").await;
    cluster.kill(&node);
    let node_killed = Instant::now();
    let killed_ms = now_ms();
    // Give a lost lease time to show (2/3 of the TTL, plus the election).
    let ttl = Duration::from_millis(ttl_ms().parse().unwrap());
    tokio::time::sleep(ttl.max(Duration::from_secs(3))).await;
    let (after, exits) =
        until_one_active(&mut ds, &fleet, urls, &logs, Duration::from_secs(60)).await;
    let recovered = node_killed.elapsed();
    let other = 1 - after;
    wait_standby(&ds[other], ds[after].id).await;
    tokio::time::sleep(BETWEEN).await;
    stop_load.store(true, Ordering::Relaxed);
    let published = load.await.expect("the publishing task");

    let ids: Vec<String> = published.iter().map(|p| p.id.clone()).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(120)).await;
    let seen = watch.finish().await;
    let lost = ids.iter().filter(|id| !results.contains_key(*id)).count();
    let wrong: Vec<&Published> = published
        .iter()
        .filter(|p| is_wrong(&results, &p.id, &samples[p.sample]))
        .collect();
    let executions = client.store().executions().await.expect("execution counts");
    let twice = ran_twice(&executions, &ids).len();
    let next_result_ms = results
        .values()
        .map(|r| r.completed_at_ms)
        .filter(|&t| t >= killed_ms)
        .min()
        .map(|t| t - killed_ms);
    let mut done: Vec<u64> = results.values().map(|r| r.completed_at_ms).collect();
    done.sort_unstable();
    // The longest time without a result from `from` to `to` (ms since the epoch).
    let gap = |from: u64, to: u64| {
        std::iter::once(from)
            .chain(done.iter().copied().filter(|&t| t >= from && t < to))
            .collect::<Vec<u64>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    };
    let gap_dispatcher = gap(dispatcher_killed_ms, killed_ms);
    let gap_node = gap(killed_ms, u64::MAX);
    eprintln!(
        "lease on a cluster: kill -9 of d-a -> d-b active {takeover:.1?} later; killed node \
         {node} (d-b's connection, the lease's leader; P1 leader {p1_leader:?}) -> {} active \
         {recovered:.1?} later (exits meanwhile: {exits:?}), next result {next_result_ms:?} ms \
         after; longest gap between results after the dispatcher's kill {gap_dispatcher} ms, \
         after the node's {gap_node} ms; published {}, results {}, lost {lost}, wrong {}, executed twice {twice}; \
         dispatcher samples: {} rounds, {} with one active, {} with two, longest with none \
         {:.1?}; worker in flight at most {:?} of {:?}",
        ds[after].id,
        published.len(),
        results.len(),
        wrong.len(),
        seen.rounds,
        seen.rounds_one_active,
        seen.overlaps.len(),
        seen.longest_without_active,
        seen.max_in_flight,
        seen.slots,
    );
    assert_eq!(lost, 0, "lost jobs (logs in {})", logs.display());
    assert!(wrong.is_empty(), "wrong results, e.g. {}", wrong[0].id);
    assert!(
        seen.overlaps.is_empty(),
        "two dispatchers active at once: {:?}",
        seen.overlaps
    );
    assert!(seen.over_slots().is_empty(), "{:?}", seen.over_slots());
    for e in &exits {
        assert!(
            !e.ends_with("exit status: 0"),
            "a clean exit where a lost lease was expected: {e}"
        );
    }
}

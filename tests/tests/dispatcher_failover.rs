//! Two dispatchers on one stack: only the holder of the dispatcher lease schedules, the
//! other waits as a standby and takes over when the active one is killed (`kill -9`: the
//! lease expires with its TTL) or stopped (SIGTERM: the lease is handed over at once); an
//! active dispatcher whose lease is taken from it stops and exits non-zero.
//! Every job gets one correct result, and the worker never holds more jobs than its slots.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetinfer_devkit::local::{binary, LocalStack, Process};
use jetinfer_schemas::Priority;
use jetinfer_tests::http::{get, metrics_addr, readyz, scrape};
use jetinfer_tests::watch::metric;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id};

const TTL_MS: &str = "3000";
const ACK_WAIT_MS: &str = "4000";
const SMALL_STREAMS: &str = "268435456";

/// A stack whose dispatcher is `d-a` (active), with one worker serving metrics whose
/// batches take 200 ms longer (so that the active dispatcher surely holds jobs on it when
/// killed), and the standby `d-b`; with both dispatchers' metrics addresses.
async fn two_dispatcher_stack(ttl_ms: &str) -> (LocalStack, Process, String, String) {
    let mut builder = LocalStack::builder()
        .workers(1)
        .dispatcher_args(dispatcher_args("d-a", ttl_ms))
        .worker_args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--inject-faults",
            "slow_ms=200",
        ])
        .env("RUST_LOG", "info");
    // FAILOVER_LOGS=<dir> keeps the processes' logs there (by default they go with the stack).
    if let Ok(dir) = std::env::var("FAILOVER_LOGS") {
        builder = builder.log_dir(dir);
    }
    let mut stack = builder
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let a_log = stack.dispatcher().unwrap().log_path().to_path_buf();
    let a_addr = metrics_addr(&a_log).await;
    wait_ready(&a_addr, Duration::from_secs(30)).await;
    let b = start_second(&stack, ttl_ms);
    let b_addr = metrics_addr(b.log_path()).await;
    (stack, b, a_addr, b_addr)
}

fn dispatcher_args(id: &str, ttl_ms: &str) -> Vec<String> {
    [
        "--id",
        id,
        "--metrics-addr",
        "127.0.0.1:0",
        "--lease",
        "--lease-ttl-ms",
        ttl_ms,
        "--ack-wait-ms",
        ACK_WAIT_MS,
        "--heartbeat-timeout-ms",
        "3000",
        // JetStream reserves each stream's max bytes on disk: small, so that a test machine
        // with a fuller disk still starts them.
        "--stream-max-bytes",
        SMALL_STREAMS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The standby `d-b`, logging beside the stack's processes.
fn start_second(stack: &LocalStack, ttl_ms: &str) -> Process {
    let mut args = vec![
        "--nats-url".to_string(),
        stack.nats_url().to_string(),
        "--redis-url".to_string(),
        stack.redis_url().to_string(),
    ];
    args.extend(dispatcher_args("d-b", ttl_ms));
    let log: PathBuf = stack.log_dir().join("dispatcher-b.log");
    Process::start(
        "dispatcher-b",
        binary("jetinfer-dispatcher").unwrap(),
        &args,
        [("RUST_LOG", "info")],
        log,
    )
    .unwrap()
}

/// Waits until `/readyz` on `addr` says ready; returns how long that took.
async fn wait_ready(addr: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == 200 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{addr} not ready after {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The P1 consumer's state (`num_pending`, `num_ack_pending`).
async fn p1_consumer(js: &async_nats::jetstream::Context) -> async_nats::jetstream::consumer::Info {
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("jetinfer-dispatch-p1", "JETINFER_P1")
        .await
        .unwrap();
    c.info().await.unwrap().clone()
}

/// Polls `probe` every 100 ms until it gives a value; panics after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that `b_addr` is a standby of `d-a` that has taken no job.
async fn assert_standby(b_addr: &str) {
    let (status, _) = get(b_addr, "/readyz").await;
    assert_eq!(status, 503, "a standby is not ready");
    let doc = readyz(b_addr).await;
    assert_eq!(doc["lease"], "standby, active is d-a", "{doc}");
    let m = scrape(b_addr).await;
    assert_eq!(metric(&m, "jetinfer_dispatcher_active"), 0.0, "{m}");
    assert_eq!(
        metric(&m, "jetinfer_jobs_received_total"),
        0.0,
        "the standby pulled jobs while the other was active"
    );
    assert_eq!(metric(&m, "jetinfer_queue_pushes_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_dispatcher_hands_over_with_no_job_lost() {
    let (mut stack, mut b, a_addr, b_addr) = two_dispatcher_stack(TTL_MS).await;
    let a_metrics = scrape(&a_addr).await;
    assert_eq!(metric(&a_metrics, "jetinfer_dispatcher_active"), 1.0);
    assert_eq!(readyz(&a_addr).await["lease"], "active");
    assert_standby(&b_addr).await;
    let worker_log = stack.workers()[0].log_path().to_path_buf();
    let worker_addr = metrics_addr(&worker_log).await;
    let slots = readyz(&a_addr).await["workers"][0]["slots"]
        .as_u64()
        .expect("the worker's slots in /readyz");

    // The worker's in-flight jobs, sampled all along.
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (max, stop, addr) = (max_in_flight.clone(), stop.clone(), worker_addr.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (_, m) = get(&addr, "/metrics").await;
                let n = metric(&m, "jetinfer_worker_in_flight_jobs") as u64;
                max.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Load across the kill: 150 jobs in rounds of 10, a burst of 100 that the active one
    // is killed while holding (un-acked, on the slow worker), then 50 more.
    let client = stack.client().await.unwrap();
    let js = async_nats::jetstream::new(stack.connect_nats().await.unwrap());
    let prefix = run_id("failover");
    let mut jobs = Vec::new();
    for round in 0..15 {
        let p = format!("{prefix}-{round}");
        jobs.extend(publish_samples(&client, "mlp", 10, Priority::P1, &p).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let burst = format!("{prefix}-burst");
    jobs.extend(publish_samples(&client, "mlp", 100, Priority::P1, &burst).await);
    let held = wait_for(
        Duration::from_secs(20),
        "the active one to hold jobs",
        || async {
            let n = p1_consumer(&js).await.num_ack_pending;
            (n > 0).then_some(n)
        },
    )
    .await;
    // The standby still took nothing while the active one worked.
    assert_standby(&b_addr).await;
    stack.dispatcher().unwrap().kill();
    let killed = Instant::now();
    for round in 15..20 {
        let p = format!("{prefix}-{round}");
        jobs.extend(publish_samples(&client, "mlp", 10, Priority::P1, &p).await);
    }
    // The key expires within the TTL; the standby polls at a third of it.
    wait_ready(&b_addr, Duration::from_secs(20)).await;
    let took = killed.elapsed();
    eprintln!("killed holding {held} jobs; standby ready {took:?} after the kill");
    assert_eq!(readyz(&b_addr).await["lease"], "active");
    assert_eq!(
        metric(&scrape(&b_addr).await, "jetinfer_dispatcher_active"),
        1.0
    );

    assert_all_correct(&client, &jobs, Duration::from_secs(90)).await;
    // The jobs the killed one held come back to the new active one after their AckWait
    // (their results may be stored already), and every message is acked in the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let b_metrics = loop {
        let m = scrape(&b_addr).await;
        if metric(&m, "jetinfer_redeliveries_total") > 0.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no job held by the killed dispatcher reached the standby:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    loop {
        let info = p1_consumer(&js).await;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "P1 messages left un-acked: {} pending, {} awaiting ack",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let max = max_in_flight.load(Ordering::Relaxed);
    eprintln!(
        "worker in flight at most {max} of {slots} slots; {} redeliveries on the new active one",
        metric(&b_metrics, "jetinfer_redeliveries_total")
    );
    assert!(max >= 1, "the sampler saw no job on the worker");
    assert!(
        max <= slots,
        "the worker held {max} jobs at once, more than its {slots} slots"
    );
    b.check_running("after the hand-over").unwrap();
    let log = b.log();
    assert!(log.contains("took the dispatcher lease"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_active_dispatcher_hands_over_at_once() {
    // A TTL of 30 s: a hand-over by expiry would take far longer than the limit below.
    let (mut stack, b, a_addr, b_addr) = two_dispatcher_stack("30000").await;
    assert_eq!(readyz(&a_addr).await["lease"], "active");
    assert_standby(&b_addr).await;
    let a = stack.dispatcher().unwrap();
    a.terminate();
    let status = a
        .wait_exit_async(Duration::from_secs(20))
        .await
        .expect("the active dispatcher exits on SIGTERM");
    assert!(status.success(), "{status:?}: {}", a.log_tail(20));
    assert!(a.log().contains("released the dispatcher lease"));
    let took = wait_ready(&b_addr, Duration::from_secs(10)).await;
    eprintln!("standby ready {took:?} after the active one exited");

    let client = stack.client().await.unwrap();
    let jobs = publish_samples(&client, "mlp", 20, Priority::P0, &run_id("handover")).await;
    assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_whose_lease_is_taken_stops_and_exits_non_zero() {
    let mut stack = jetinfer_tests::stack(
        0,
        &[
            "--id",
            "d-a",
            "--lease",
            "--lease-ttl-ms",
            TTL_MS,
            "--stream-max-bytes",
            SMALL_STREAMS,
        ],
    )
    .await;
    let nats = stack.connect_nats().await.unwrap();
    let kv = async_nats::jetstream::new(nats)
        .get_key_value("JETINFER_LEASES")
        .await
        .expect("the active dispatcher created the lease bucket");
    let entry = kv.entry("dispatcher").await.unwrap().expect("lease key");
    assert_eq!(&entry.value[..], b"d-a");
    // Someone else writes the key: the next renewal finds the revision moved.
    kv.put("dispatcher", "intruder".into()).await.unwrap();
    let a = stack.dispatcher().unwrap();
    let status = a
        .wait_exit_async(Duration::from_secs(15))
        .await
        .expect("a dispatcher that lost its lease exits");
    assert!(!status.success(), "{status:?}");
    assert!(a.log().contains("lost the dispatcher lease"), "{}", a.log());
    // It did not release what is not its own.
    let entry = kv.entry("dispatcher").await.unwrap().expect("lease key");
    assert_eq!(&entry.value[..], b"intruder");
}

//! A rolling restart under steady load: two dispatchers with `--lease` and two workers
//! (the CPU `mlp` model), restarted one at a time with SIGTERM — each drains and exits 0,
//! and the next is restarted only once the restarted one is ready again (a dispatcher: its
//! `/readyz` says standby of the other, which took over; a worker: its `/readyz` is 200 and
//! the active dispatcher lists it). Each dispatcher is restarted while it is the active
//! one, so both restarts hand the lease over.
//!
//! Asserts: every published job has one result (lost = 0), every result is `ok` and equal
//! to PyTorch's outputs, no job was announced done twice, run twice, or had its stored
//! result changed, no worker held more jobs than its slots (its own gauges, sampled every
//! 20 ms), no two dispatchers were ever proven active at once, and the longest gap between
//! results (printed) stays under the AckWait. Logs: `target/rolling-restart-logs/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetinfer_devkit::local::{binary, repo_root, LocalStack, Process};
use jetinfer_tests::http::metrics_addr;
use jetinfer_tests::load::{is_wrong, publish_load, ran_twice, Load, Published};
use jetinfer_tests::watch::{metric, try_get, wait_readyz, Fleet};
use jetinfer_tests::{collect_results, golden};

/// Jobs per second, and the most that are published in all (bounded even if the restarts
/// take long: 2,000 jobs are 50 s of load).
const RATE: f64 = 50.0;
const MAX_JOBS: usize = 2_000;
/// Steady load before the first restart and after the last one is ready.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a SIGTERM'd process may take to exit, and a restarted one to be ready.
const EXIT_LIMIT: Duration = Duration::from_secs(30);
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Steady load between one restart being ready and the next SIGTERM.
const BETWEEN: Duration = Duration::from_secs(4);
/// The workers' drain time (`--drain-ms`).
const DRAIN_MS: &str = "15000";
/// Added to every forward (`--inject-faults slow_ms`): a batch takes about as long as a
/// real model's, so the workers hold jobs and the active dispatcher has bundles in flight
/// when they are stopped (the `mlp` forward alone takes a millisecond).
const SLOW_MS: &str = "slow_ms=150";
/// The longest acceptable gap between results: below the AckWait (4 s), since a graceful
/// restart hands jobs back at once (nak) or finishes them; none waits for a redelivery.
const GAP_BOUND_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dispatcher,
    Worker,
}

/// One dispatcher or worker, across its restarts.
struct Member {
    id: String,
    kind: Kind,
    args: Vec<String>,
    incarnation: u32,
    process: Process,
    addr: String,
}

impl Member {
    /// Starts incarnation `incarnation` with a log of its own (`<id>.<n>.log`): the
    /// metrics address is read from the log, and an appended log would show the old one.
    async fn start(id: &str, kind: Kind, args: Vec<String>, incarnation: u32, logs: &Path) -> Self {
        let program = binary(match kind {
            Kind::Dispatcher => "jetinfer-dispatcher",
            Kind::Worker => "jetinfer-worker",
        })
        .unwrap();
        let log = logs.join(format!("{id}.{incarnation}.log"));
        let process = Process::start(id, program, &args, [("RUST_LOG", "info")], &log)
            .unwrap_or_else(|e| panic!("starting {id}: {e}"));
        let addr = metrics_addr(&log).await;
        Member {
            id: id.to_string(),
            kind,
            args,
            incarnation,
            process,
            addr,
        }
    }
}

fn dispatcher_args(stack: &LocalStack, id: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--nats-url".into(),
        stack.nats_url().into(),
        "--redis-url".into(),
        stack.redis_url().into(),
    ];
    args.extend(
        [
            "--id",
            id,
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease",
            "--lease-ttl-ms",
            "3000",
            "--ack-wait-ms",
            "4000",
            "--heartbeat-timeout-ms",
            "3000",
            // JetStream reserves each stream's max bytes on disk: small.
            "--stream-max-bytes",
            "268435456",
        ]
        .map(String::from),
    );
    args
}

fn worker_args(stack: &LocalStack, id: &str) -> Vec<String> {
    let models = repo_root().unwrap().join("models/out/models.toml");
    [
        "--nats-url",
        stack.nats_url(),
        "--redis-url",
        stack.redis_url(),
        "--models",
        &models.display().to_string(),
        "--id",
        id,
        "--metrics-addr",
        "127.0.0.1:0",
        "--record-executions",
        "--drain-ms",
        DRAIN_MS,
        "--inject-faults",
        SLOW_MS,
    ]
    .map(String::from)
    .to_vec()
}

/// A dispatcher that is a standby of `active`.
async fn wait_standby(m: &Member, active: &str) {
    let word = format!("standby, active is {active}");
    let what = format!("{} standby of {active}", m.id);
    wait_readyz(&m.addr, READY_LIMIT, &what, |s, d| {
        s == 503 && d["lease"] == word.as_str()
    })
    .await;
}

/// A worker that is ready and that the active dispatcher at `dispatcher` lists.
async fn wait_worker(m: &Member, dispatcher: &str) {
    wait_readyz(&m.addr, READY_LIMIT, &format!("{} ready", m.id), |s, _| {
        s == 200
    })
    .await;
    let id = m.id.clone();
    wait_readyz(dispatcher, READY_LIMIT, &format!("{id} listed"), |_, d| {
        d["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["id"] == id.as_str()))
    })
    .await;
}

/// SIGTERM, then waits for a clean exit; returns the jobs it held just before (its own
/// gauge) and how long the exit took.
async fn stop(m: &mut Member) -> (u64, Duration) {
    let gauge = match m.kind {
        Kind::Dispatcher => "jetinfer_dispatcher_held_jobs",
        Kind::Worker => "jetinfer_worker_in_flight_jobs",
    };
    let held = match try_get(&m.addr, "/metrics").await {
        Some((200, text)) => metric(&text, gauge) as u64,
        _ => panic!("{} does not serve /metrics before its restart", m.id),
    };
    let start = Instant::now();
    m.process.terminate();
    let status = m
        .process
        .wait_exit_async(EXIT_LIMIT)
        .await
        .unwrap_or_else(|| panic!("{} did not exit within {EXIT_LIMIT:?} of SIGTERM", m.id));
    assert!(
        status.success(),
        "{} exited with {status:?}:\n{}",
        m.id,
        m.process.log_tail(30)
    );
    (held, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_dispatcher_and_worker_loses_no_job() {
    let logs: PathBuf = repo_root().unwrap().join("target/rolling-restart-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let stack = LocalStack::builder()
        .dispatcher(false)
        .workers(0)
        .log_dir(&logs)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting NATS and Redis: {e}"));
    let fleet = Fleet::new();

    // d-a first, so it is the active one; then its standby d-b; then the workers.
    let mut dispatchers = Vec::new();
    for id in ["d-a", "d-b"] {
        let m = Member::start(id, Kind::Dispatcher, dispatcher_args(&stack, id), 0, &logs).await;
        match id {
            "d-a" => wait_readyz(&m.addr, READY_LIMIT, "d-a active", |s, _| s == 200).await,
            _ => wait_standby(&m, "d-a").await,
        }
        fleet.dispatcher(id, &m.addr);
        dispatchers.push(m);
    }
    let mut workers = Vec::new();
    for id in ["worker-0", "worker-1"] {
        let m = Member::start(id, Kind::Worker, worker_args(&stack, id), 0, &logs).await;
        wait_worker(&m, &dispatchers[0].addr).await;
        fleet.worker(id, &m.addr);
        workers.push(m);
    }
    let watch = fleet.watch();

    let client = stack.client().await.unwrap();
    // Every completion notice, to find a job announced twice.
    let mut notices = client.nats().subscribe("jetinfer.done.>").await.unwrap();
    let (end_counting, mut counting_ends) = tokio::sync::oneshot::channel::<()>();
    let done_counter = tokio::spawn(async move {
        let mut counts: HashMap<String, u32> = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut counting_ends => return counts,
                msg = notices.next() => match msg {
                    Some(msg) => {
                        let id = msg.subject.trim_start_matches("jetinfer.done.").to_string();
                        *counts.entry(id).or_default() += 1;
                    }
                    None => return counts,
                },
            }
        }
    });
    let samples = golden().samples("mlp");
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(publish_load(
        client.clone(),
        samples.clone(),
        stop_load.clone(),
        Load {
            test: "rolling",
            rate: RATE,
            max_jobs: MAX_JOBS,
            retry_for: None,
        },
    ));
    let load_started = Instant::now();
    tokio::time::sleep(SETTLE).await;

    // The restarts, one at a time; each dispatcher while it is the active one.
    let mut steps: Vec<String> = Vec::new();
    let mut active = 0;
    let mut held_at_stop = [0u64; 2];
    for _ in 0..2 {
        tokio::time::sleep(BETWEEN).await;
        let other = 1 - active;
        let m = &mut dispatchers[active];
        let t0 = Instant::now();
        let (held, exit) = stop(m).await;
        held_at_stop[0] += held;
        assert!(
            m.process.log().contains("released the dispatcher lease"),
            "{} did not hand the lease over:\n{}",
            m.id,
            m.process.log_tail(30)
        );
        let taker = dispatchers[other].addr.clone();
        let taken_from = Instant::now();
        wait_readyz(&taker, READY_LIMIT, "the standby takes over", |s, _| {
            s == 200
        })
        .await;
        let took = taken_from.elapsed();
        let m = &mut dispatchers[active];
        let (id, args, n) = (m.id.clone(), m.args.clone(), m.incarnation + 1);
        *m = Member::start(&id, Kind::Dispatcher, args, n, &logs).await;
        fleet.dispatcher(&id, &m.addr);
        let other_id = dispatchers[other].id.clone();
        wait_standby(&dispatchers[active], &other_id).await;
        steps.push(format!(
            "{id}: held {held} jobs, exit {exit:.1?} after SIGTERM, the other active {took:.1?} after the exit, \
             back as standby {:.1?} after SIGTERM",
            t0.elapsed()
        ));
        active = other;
    }
    let active_addr = dispatchers[active].addr.clone();
    for w in workers.iter_mut() {
        tokio::time::sleep(BETWEEN).await;
        let t0 = Instant::now();
        let (held, exit) = stop(w).await;
        held_at_stop[1] += held;
        let (id, args, n) = (w.id.clone(), w.args.clone(), w.incarnation + 1);
        *w = Member::start(&id, Kind::Worker, args, n, &logs).await;
        fleet.worker(&id, &w.addr);
        wait_worker(w, &active_addr).await;
        assert_eq!(w.kind, Kind::Worker);
        steps.push(format!(
            "{id}: held {held} jobs, drained and exited {exit:.1?} after SIGTERM, ready again {:.1?} after SIGTERM",
            t0.elapsed()
        ));
    }
    let restarts_took = load_started.elapsed() - SETTLE;
    // Otherwise the drains were not exercised: the load is too light for this machine.
    assert!(
        held_at_stop[0] > 0 && held_at_stop[1] > 0,
        "jobs held when stopped (dispatchers, workers): {held_at_stop:?}"
    );
    tokio::time::sleep(SETTLE).await;
    let load_was_on = !load.is_finished();
    stop_load.store(true, Ordering::Relaxed);
    let published = load.await.expect("the publishing task");
    assert!(
        load_was_on && published.len() < MAX_JOBS,
        "the load ended before the restarts did ({} jobs): raise MAX_JOBS",
        published.len()
    );

    // Every job: one result, ok, equal to PyTorch's.
    let ids: Vec<String> = published.iter().map(|p| p.id.clone()).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(120)).await;
    let seen = watch.finish().await;
    let lost: Vec<&String> = ids.iter().filter(|id| !results.contains_key(*id)).collect();
    let wrong: Vec<&Published> = published
        .iter()
        .filter(|p| is_wrong(&results, &p.id, &samples[p.sample]))
        .collect();
    // Stored results read again: none changed since the first read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = collect_results(&client, &ids, Duration::from_secs(5)).await;
    let changed: Vec<&String> = ids
        .iter()
        .filter(|id| match (results.get(*id), again.get(*id)) {
            (Some(a), Some(b)) => a.outputs != b.outputs || a.worker != b.worker,
            _ => false,
        })
        .collect();
    let _ = end_counting.send(());
    let notices = done_counter.await.expect("the notice counter");
    let announced_twice: Vec<(&String, u32)> = ids
        .iter()
        .filter_map(|id| notices.get(id).map(|&n| (id, n)))
        .filter(|(_, n)| *n > 1)
        .collect();
    let executions = client.store().executions().await.expect("execution counts");
    let ran_twice = ran_twice(&executions, &ids).len();

    // The longest time without a result while the load ran.
    let mut done: Vec<u64> = results.values().map(|r| r.completed_at_ms).collect();
    done.sort_unstable();
    let longest_gap = done.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);

    eprintln!("rolling restart: {}", steps.join("; "));
    eprintln!(
        "rolling restart: published {} at {RATE}/s over {:.1?} (restarts {restarts_took:.1?}), \
         results {}, lost {}, wrong {}, changed {}, announced twice {}, executed twice {ran_twice}; \
         longest gap between results {longest_gap} ms; worker in flight at most {:?} of slots \
         {:?}; dispatcher samples: {} rounds, {} with one active, {} with two, longest with \
         none active {:.1?}",
        published.len(),
        load_started.elapsed(),
        results.len(),
        lost.len(),
        wrong.len(),
        changed.len(),
        announced_twice.len(),
        seen.max_in_flight,
        seen.slots,
        seen.rounds,
        seen.rounds_one_active,
        seen.overlaps.len(),
        seen.longest_without_active,
    );
    assert!(
        lost.is_empty(),
        "lost jobs, e.g. {:?} (logs in {})",
        &lost[..lost.len().min(5)],
        logs.display()
    );
    assert!(
        wrong.is_empty(),
        "wrong results, e.g. {}: {:?}",
        wrong[0].id,
        results[&wrong[0].id].error
    );
    assert!(changed.is_empty(), "stored results changed: {changed:?}");
    // Graceful stops finish or hand back what they hold: nothing runs twice.
    assert_eq!(ran_twice, 0, "jobs executed more than once");
    assert!(
        longest_gap < GAP_BOUND_MS,
        "no result for {longest_gap} ms (bound {GAP_BOUND_MS} ms; logs in {})",
        logs.display()
    );
    assert!(
        announced_twice.is_empty(),
        "jobs announced done more than once: {announced_twice:?}"
    );
    assert!(
        seen.overlaps.is_empty(),
        "two dispatchers active at once: {:?}",
        seen.overlaps
    );
    assert!(
        seen.over_slots().is_empty(),
        "workers held more jobs than their slots: {:?}",
        seen.over_slots()
    );
    for w in &workers {
        assert!(
            seen.max_in_flight.get(&w.id).is_some_and(|&n| n >= 1),
            "the sampler saw no job on {}",
            w.id
        );
    }
}

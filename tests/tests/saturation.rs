//! Worker-side saturation signals (issue 13, item 4), with real processes and the simulated
//! device (worker/src/sim.rs): one worker serving a model whose batch takes
//! 40 ms + 5 ms per job, at most 8 jobs (full batches: 8 / 80 ms = 100 jobs/s).
//!
//! Idle, the worker's device busy share and served rate are ~0. Under a light load (8
//! jobs/s) the device is busy part of the time, the served rate follows the offered one and
//! the dispatcher's score stays below 1. Offered a burst well above capacity, the score
//! passes 1 and the served rate climbs toward capacity; every job still gets its answer.
//! The heartbeats on the wire carry the measured load. Every wait is a poll with a deadline.

use std::time::{Duration, Instant};

use futures::StreamExt;
use jetinfer_devkit::local::LocalStack;
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::{Job, Priority, Status, Tensor};
use jetinfer_tests::{collect_results, http, run_id};

const LIGHT_RATE: f64 = 8.0;
const LIGHT_SECS: u64 = 8;
const BURST: usize = 500;

fn models_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = "[[models]]\nname = \"sat\"\nversion = \"1\"\nmax_batch_size = 8\n\
                max_queue_delay_ms = 5\ninputs = [{ dtype = \"f32\", shape = [2] }]\n\
                sim = { batch_ms = 40.0, per_sample_ms = 5.0 }\n";
    let path = dir.join("models.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of the first series named `name` whose labels contain `label`.
fn value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

/// Calls `f` every 200 ms until it returns `Some`, panicking with `what` after `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Job `i`: inputs of its own, so no job is answered from the result cache.
fn job(id: String, i: usize) -> Job<'static> {
    let x = i as f32;
    Job::new(id, "sat", vec![Tensor::from_f32(vec![2], &[x, -x])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_load_follows_the_offered_load_and_the_score_passes_one_when_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = LocalStack::builder()
        .workers(1)
        .models(models_file(dir.path()))
        .worker_args(["--metrics-addr", "127.0.0.1:0", "--slots", "16"])
        .dispatcher_args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--autoscale-every-ms",
            "200",
            "--deadline-ms",
            "600000,600000,600000",
        ])
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let d_addr = http::metrics_addr(stack.dispatcher().unwrap().log_path()).await;
    let w_addr = http::metrics_addr(stack.workers()[0].log_path()).await;
    let nats = stack.connect_nats().await.unwrap();
    let mut beats = nats
        .subscribe("jetinfer.workers.*.heartbeat")
        .await
        .unwrap();
    let client = stack.client().await.unwrap();
    let run = run_id("sat");
    let model = r#"model="sat""#;

    // Idle: measured, and ~0.
    let text = poll(Duration::from_secs(30), "idle worker gauges", || async {
        let t = http::scrape(&w_addr).await;
        value(&t, "jetinfer_worker_device_busy_ratio", r#"device="cpu""#).map(|_| t)
    })
    .await;
    let idle_busy = value(&text, "jetinfer_worker_device_busy_ratio", "cpu").unwrap();
    assert!(idle_busy < 0.02, "idle device busy {idle_busy}: {text}");
    assert_eq!(
        value(&text, "jetinfer_worker_served_jobs_per_second", model),
        Some(0.0),
        "{text}"
    );

    // Light load: 8 jobs/s for 8 s, well under 100 jobs/s.
    let mut ids = Vec::new();
    let started = Instant::now();
    for i in 0..(LIGHT_RATE as u64 * LIGHT_SECS) {
        let due = started + Duration::from_secs_f64(i as f64 / LIGHT_RATE);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("{run}-light-{i}");
        client
            .submit(Priority::P1, &job(id.clone(), i as usize))
            .await
            .unwrap();
        ids.push(id);
    }
    let w = http::scrape(&w_addr).await;
    let d = http::scrape(&d_addr).await;
    let busy = value(&w, "jetinfer_worker_device_busy_ratio", "cpu").unwrap();
    let served = value(&w, "jetinfer_worker_served_jobs_per_second", model).unwrap();
    let light_score = value(&d, "jetinfer_model_saturation", model).unwrap();
    println!("light load: device busy {busy:.3}, served {served:.2}/s, score {light_score:.3}");
    assert!(
        (0.1..0.95).contains(&busy),
        "busy under light load {busy}: {w}"
    );
    // About 8 jobs/s over the window (the first second or so of it was idle).
    assert!((4.0..=10.0).contains(&served), "served {served}: {w}");
    assert!(
        light_score > 0.0 && light_score < 1.0,
        "score under light load {light_score}: {d}"
    );
    let capacity = value(&w, "jetinfer_worker_capacity_jobs_per_second", model).unwrap();
    assert!(capacity > served, "capacity {capacity} vs served {served}");

    // The heartbeat on the wire carries the same kind of figures.
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = loop {
        assert!(Instant::now() < deadline, "no heartbeat with load in 10 s");
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), beats.next()).await else {
            continue;
        };
        let hb: Heartbeat = rmp_serde::from_slice(&msg.payload).unwrap();
        if let Some(load) = hb.load.filter(|l| !l.models.is_empty()) {
            break load;
        }
    };
    assert_eq!(load.models[0].name, "sat");
    assert!(load.models[0].served_per_s > 0.0, "{load:?}");
    assert_eq!(load.devices[0].device, "cpu");
    assert!(load.devices[0].busy > 0.0, "{load:?}");
    assert_eq!(
        load.devices[0].memory_total_bytes, None,
        "no GPU memory on CPU"
    );

    // A burst of 500 jobs at once: five seconds of work arriving in well under one.
    for i in 0..BURST {
        let id = format!("{run}-burst-{i}");
        let n = 1_000_000 + i;
        client
            .submit(Priority::P1, &job(id.clone(), n))
            .await
            .unwrap();
        ids.push(id);
    }
    let score = poll(Duration::from_secs(20), "score above 1", || async {
        let d = http::scrape(&d_addr).await;
        value(&d, "jetinfer_model_saturation", model).filter(|s| *s > 1.0)
    })
    .await;
    let peak = poll(
        Duration::from_secs(30),
        "served rate near capacity",
        || async {
            let w = http::scrape(&w_addr).await;
            value(&w, "jetinfer_worker_served_jobs_per_second", model).filter(|s| *s > 40.0)
        },
    )
    .await;
    let w = http::scrape(&w_addr).await;
    let fitted = value(&w, "jetinfer_worker_capacity_jobs_per_second", model).unwrap();
    println!("burst: score {score:.2}, served {peak:.1}/s, capacity {fitted:.1}/s (light: {capacity:.1}/s)");
    assert!(
        peak > 3.0 * served,
        "served {peak} under the burst vs {served} light"
    );

    let results = collect_results(&client, &ids, Duration::from_secs(120)).await;
    assert_eq!(results.len(), ids.len(), "every job answered");
    assert!(results.values().all(|r| r.status == Status::Ok));

    // Drained and idle again: the busy share falls back once the window has passed.
    let quiet = poll(Duration::from_secs(30), "device idle again", || async {
        let w = http::scrape(&w_addr).await;
        value(&w, "jetinfer_worker_device_busy_ratio", "cpu").filter(|b| *b < 0.02)
    })
    .await;
    println!("idle again: device busy {quiet:.3}");
    stack.stop();
}

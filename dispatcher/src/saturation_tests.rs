//! Unit tests of the saturation score (saturation.rs).

use super::*;
use jetinfer_schemas::worker::{DeviceLoad, ModelInfo, ModelLoad, WorkerLoad};
use std::sync::Arc;

fn hb(worker: &str, slots: u32, free: u32, models: &[(&str, u32, Option<f64>)]) -> Heartbeat {
    Heartbeat {
        v: 1,
        worker: worker.into(),
        models: models
            .iter()
            .map(|&(name, max_batch_size, batch_ms)| ModelInfo {
                name: name.into(),
                version: "1".into(),
                max_batch_size,
                inputs: vec![],
                batch_ms,
            })
            .collect(),
        slots,
        free_slots: free,
        devices: vec![],
        gpu_memory_bytes: None,
        accepting: true,
        sent_at_ms: 0,
        load_errors: vec![],
        load: None,
    }
}

/// `hb` with a load report: per model (served/s, busy, fitted capacity).
fn with_load(
    mut h: Heartbeat,
    models: &[(&str, f64, f64, Option<f64>)],
    memory: Option<(u64, u64)>,
) -> Arc<Heartbeat> {
    h.load = Some(WorkerLoad {
        window_s: 10.0,
        models: models
            .iter()
            .map(|&(name, served_per_s, busy, capacity_per_s)| ModelLoad {
                name: name.into(),
                version: "1".into(),
                served_per_s,
                busy,
                capacity_per_s,
            })
            .collect(),
        devices: vec![DeviceLoad {
            device: "cuda:0".into(),
            busy: 0.5,
            memory_used_bytes: memory.map(|m| m.0),
            memory_total_bytes: memory.map(|m| m.1),
        }],
    });
    Arc::new(h)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn old_workers_count_at_full_batches_over_batch_ms() {
    let workers = vec![
        // 32 jobs per 100 ms = 320 jobs/s; half of its slots taken.
        Arc::new(hb(
            "w1",
            64,
            32,
            &[("resnet", 32, Some(100.0)), ("mlp", 8, None)],
        )),
        // Same model, 160 jobs/s, all slots taken.
        Arc::new(hb("w2", 64, 0, &[("resnet", 16, Some(100.0))])),
    ];
    let lags = BTreeMap::from([("resnet".to_string(), 960), ("orphan".to_string(), 5)]);
    let s = model_signals(&lags, &BTreeMap::new(), &workers, Duration::from_secs(2));
    let r = &s["resnet"];
    assert!(close(r.capacity, 480.0));
    assert!(close(r.busy, 0.75));
    // No report of served jobs and no slope yet: only the backlog term, 960 / (480 × 2).
    assert!(close(r.saturation.unwrap(), 1.0), "{r:?}");
    assert_eq!(
        (r.arrival, r.device_busy, r.memory_headroom),
        (None, None, None)
    );
    // Served but never measured: no capacity, no score.
    assert_eq!(s["mlp"].capacity, 0.0);
    assert_eq!(s["mlp"].saturation, None);
    assert!(close(s["mlp"].busy, 0.5));
    // Queued but served by nobody.
    assert_eq!(s["orphan"].lag, 5);
    assert_eq!(s["orphan"].saturation, None);
}

#[test]
fn score_is_arrival_over_measured_capacity_plus_backlog() {
    let workers = vec![
        // Fit says 400 jobs/s; it ran 100 jobs/s at busy 0.5 (200 per busy second).
        with_load(
            hb("w1", 64, 60, &[("m", 32, Some(10.0))]),
            &[("m", 100.0, 0.5, Some(400.0))],
            Some((60, 80)),
        ),
        // No fit yet, but 150 jobs/s at busy 0.75: 200 jobs/s observed.
        with_load(
            hb("w2", 64, 64, &[("m", 32, Some(10.0))]),
            &[("m", 150.0, 0.75, None)],
            Some((20, 80)),
        ),
    ];
    let lags = BTreeMap::from([("m".to_string(), 600)]);
    // The backlog grows by 50 jobs/s: 250 served + 50 = 300 arrive.
    let slopes = BTreeMap::from([("m".to_string(), 50.0)]);
    let s = &model_signals(&lags, &slopes, &workers, Duration::from_secs(30))["m"];
    assert!(close(s.capacity, 600.0), "{s:?}");
    assert!(close(s.served, 250.0));
    assert!(close(s.arrival.unwrap(), 300.0));
    assert!(close(s.device_busy.unwrap(), 0.625));
    // The fuller GPU (60 of 80 used) leaves a quarter free.
    assert!(close(s.memory_headroom.unwrap(), 0.25));
    // 300 / 600 + 600 / (600 × 30)
    assert!(close(s.saturation.unwrap(), 0.5 + 600.0 / 18000.0), "{s:?}");

    // Offered twice the capacity: above 1 even before any backlog counts.
    let slopes = BTreeMap::from([("m".to_string(), 950.0)]);
    let s = &model_signals(&BTreeMap::new(), &slopes, &workers, Duration::from_secs(30))["m"];
    assert!(close(s.saturation.unwrap(), 2.0), "{s:?}");
    // A draining backlog does not count as negative arrivals.
    let slopes = BTreeMap::from([("m".to_string(), -1000.0)]);
    let s = &model_signals(&BTreeMap::new(), &slopes, &workers, Duration::from_secs(30))["m"];
    assert_eq!(s.arrival, Some(0.0));
}

#[test]
fn an_idle_reporting_worker_keeps_its_fitted_or_announced_capacity() {
    // Nothing served in the window: the fit stands; with no fit, batch_ms does.
    let workers = vec![
        with_load(
            hb("w1", 8, 8, &[("m", 8, Some(20.0))]),
            &[("m", 0.0, 0.0, Some(300.0))],
            None,
        ),
        with_load(
            hb("w2", 8, 8, &[("m", 8, Some(20.0))]),
            &[("m", 0.0, 0.0, None)],
            None,
        ),
    ];
    let s = &model_signals(
        &BTreeMap::new(),
        &BTreeMap::new(),
        &workers,
        Duration::from_secs(30),
    )["m"];
    assert!(close(s.capacity, 300.0 + 400.0), "{s:?}");
    assert!(close(s.saturation.unwrap(), 0.0));
    assert_eq!(s.memory_headroom, None, "CPU: no memory figure");
}

#[test]
fn lag_slopes_follow_growth_and_drain() {
    let t0 = Instant::now();
    let mut w = LagSlopes::default();
    let lag = |n: u64| BTreeMap::from([("m".to_string(), n)]);
    assert!(w.observe(t0, &lag(0)).is_empty(), "one sample has no slope");
    let s = w.observe(t0 + Duration::from_secs(2), &lag(100));
    assert!(close(s["m"], 50.0));
    // Absent from the streams = drained to 0.
    let s = w.observe(t0 + Duration::from_secs(4), &BTreeMap::new());
    assert!(close(s["m"], 0.0));
    // 13 s on, the base is the newest sample at least 10 s old (2 s, lag 100).
    let s = w.observe(t0 + Duration::from_secs(13), &BTreeMap::new());
    assert!(close(s["m"], -100.0 / 11.0), "{s:?}");
    // Empty for a whole window: forgotten.
    w.observe(t0 + Duration::from_secs(30), &BTreeMap::new());
    assert!(w
        .observe(t0 + Duration::from_secs(31), &BTreeMap::new())
        .is_empty());
}

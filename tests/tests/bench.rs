//! `jetinfer bench`, functionally: a short run of every system it measures — the bare
//! JetStream → Redis loop, the jetinfer pipeline and the Python baseline worker — plus the
//! ceiling loop, on `tokpool` (variable-length token ids padded per batch by the worker's
//! pad spec). Checks that every job came back, the report and plot are written, and the
//! ratios are there. No timing assertions: this machine's speed is not under test here.

use std::process::Command;

use jetinfer_devkit::local::{binary, repo_root};

#[test]
fn bench_measures_pipeline_bare_loop_bare_relay_python_and_ceiling() {
    let root = repo_root().expect("repository root");
    let dir = tempfile_dir();
    let python = root.join(".venv/bin/python");
    let export = Command::new(&python)
        .arg(root.join("models/export_reference.py"))
        .args(["--out", dir.to_str().unwrap(), "--only", "trivial,tokpool"])
        .output()
        .expect("running models/export_reference.py (run scripts/setup.sh first)");
    assert!(
        export.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let models = dir.join("models.reference.cpu.toml");
    let json = dir.join("bench.json");
    let svg = dir.join("bench.svg");
    let worker_py = format!(
        "{} {}",
        python.display(),
        root.join("bench/python/worker.py").display()
    );
    let out = Command::new(
        binary("jetinfer").expect("the jetinfer binary (cargo build --workspace --bins)"),
    )
    .arg("bench")
    .args(["--models", models.to_str().unwrap(), "--model", "tokpool"])
    .args([
        "--rates",
        "20,100,50",
        "--duration-s",
        "2.5",
        "--warmup-s",
        "0.5",
        "--dyn-len",
        "3,24",
    ])
    .args([
        "--bare-loop",
        "--bare-relay",
        "--ceiling",
        "--ceiling-seconds",
        "0.5",
        "--python-worker",
        &worker_py,
    ])
    .args([
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ])
    .args(["--log-dir", dir.join("logs").to_str().unwrap()])
    .output()
    .expect("running jetinfer bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).unwrap();
    let runs = report["runs"].as_array().expect("runs");
    let systems: Vec<&str> = runs.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["bare-loop", "bare-relay", "jetinfer", "python"]);
    for r in runs {
        let system = r["system"].as_str().unwrap();
        assert_eq!(r["missing"], 0, "{system}: {r}");
        assert_eq!(r["publish_errors"], 0, "{system}");
        assert!(
            r["errors"].as_object().unwrap().is_empty(),
            "{system}: {}",
            r["errors"]
        );
        assert_eq!(r["ok"], r["sent"], "{system}");
        assert!(r["ok"].as_u64().unwrap() > 50, "{system}: {}", r["ok"]);
        let prios: Vec<&str> = r["per_priority"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["priority"].as_str().unwrap())
            .collect();
        assert_eq!(prios, ["p0", "p1", "p2"], "{system}");
        assert!(
            r["all"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
            "{system}"
        );
    }
    assert!(runs[2]["mean_batch_size"].as_f64().unwrap() >= 1.0);
    // Every system has a service CPU: the bare ones their own threads'.
    for r in runs {
        let cpu = &r["cpu"]["service_s"];
        assert!(
            cpu.as_f64().is_some_and(|s| s > 0.0),
            "{}: {cpu}",
            r["system"]
        );
    }
    assert!(report["ceiling"]["jobs_per_s"].as_f64().unwrap() > 0.0);
    let ratios = report["ratios"].as_object().unwrap();
    for key in [
        "jetinfer/ceiling",
        "jetinfer/bare-loop jobs_per_s",
        "added_p50_ms over bare-loop",
        "jetinfer/bare-relay jobs_per_s",
        "bare-relay/python jobs_per_service_cpu_s",
        "jetinfer/python jobs_per_service_cpu_s",
    ] {
        assert!(ratios.contains_key(key), "ratio {key} missing: {ratios:?}");
    }
    let plot = std::fs::read_to_string(&svg).expect("the SVG plot");
    assert!(
        plot.starts_with("<svg") && plot.matches("<polyline").count() >= 12,
        "plot has a line per run and priority"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "jetinfer-bench-test-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

//! deploy/k8s without a cluster: `scripts/validate-k8s.sh` passes on the shipped manifests
//! (Kubernetes schemas from PyPI `kubernetes-validate`, strict, and deploy/k8s/schemas for
//! the KEDA objects and the kustomization) and fails on broken copies of them; and the
//! manifests match the code: KEDA's triggers name the streams and consumers the dispatcher
//! creates (schemas/src/names.rs), every container's command line and environment parse with
//! the binary's own flags (`--check-config`), probes ask /readyz and /healthz on the
//! `--metrics-addr` port, the worker asks for a GPU and its grace period outlasts its drain,
//! and the dispatcher runs as a lease holder with a standby whose rollouts can finish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jetinfer_devkit::local::{binary, repo_root};
use jetinfer_schemas::names::{consumer_name, jobs_stream};
use jetinfer_schemas::Priority;
use jetinfer_tests::cli::{check_config, combined as text, strings};
use serde_json::Value;

fn root() -> PathBuf {
    repo_root().expect("repository root")
}

/// Runs scripts/validate-k8s.sh on `dir`.
fn validate(dir: &Path) -> Output {
    Command::new(root().join("scripts/validate-k8s.sh"))
        .arg(dir)
        .output()
        .expect("running scripts/validate-k8s.sh")
}

/// Every object of deploy/k8s, as JSON, read by the YAML library the validator uses.
fn objects() -> Vec<Value> {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg("-c")
        .arg(
            "import json, pathlib, sys, yaml\n\
             docs = [d for p in sorted(pathlib.Path(sys.argv[1]).glob('*.yaml'))\n\
                     for d in yaml.safe_load_all(p.read_text()) if d is not None]\n\
             print(json.dumps(docs))",
        )
        .arg(root().join("deploy/k8s"))
        .output()
        .expect("running the virtualenv's python (scripts/setup.sh makes it)");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("manifests as JSON")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

/// The only container of a Deployment.
fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A container's environment as the process would see it: literal values as written,
/// Secret keys replaced by stand-ins (only their names are in the manifests), the pod
/// name for a `fieldRef`.
fn environment(c: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            match key {
                "REDIS_URL" => "redis://user:stand-in@redis:6379".to_string(),
                other => format!("stand-in-{}", other.to_lowercase()),
            }
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "jetinfer-worker-5d9c7b-x2k4q".to_string()
        } else {
            panic!("env {name}: neither a value, a Secret key nor the pod name: {e}")
        };
        env.insert(name, value);
    }
    env
}

#[test]
fn the_manifests_pass_the_schema_validation() {
    let out = validate(&root().join("deploy/k8s"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" 0 failures"), "{}", text(&out));
    // The oldest Kubernetes still commonly run and the newest the package knows.
    for version in ["1.29.0", "1.37.0"] {
        let out = Command::new(root().join("scripts/validate-k8s.sh"))
            .env("JETINFER_K8S_VERSION", version)
            .output()
            .expect("running scripts/validate-k8s.sh");
        assert!(out.status.success(), "Kubernetes {version}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("(Kubernetes {version})")),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn broken_manifests_fail_the_schema_validation() {
    // Each break on its own copy, so each must be caught by itself.
    let breaks: [(&str, &str, &str, &str); 4] = [
        // A misspelt field (strict schemas): Kubernetes would drop it silently.
        (
            "worker.yaml",
            "terminationGracePeriodSeconds: 60",
            "terminationGracePeriodSecond: 60",
            "terminationGracePeriodSecond",
        ),
        // A wrong type.
        (
            "dispatcher.yaml",
            "replicas: 2",
            "replicas: two",
            "spec/replicas",
        ),
        // A KEDA trigger without its consumer.
        (
            "keda.yaml",
            "        consumer: jetinfer-dispatch-p1\n",
            "",
            "'consumer' is a required property",
        ),
        // A manifest the kustomization does not list.
        (
            "models.yaml",
            "kind: ConfigMap",
            "kind: ConfigMap",
            "extra.yaml",
        ),
    ];
    for (file, from, to, expect) in breaks {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(root().join("deploy/k8s")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let path = tmp.path().join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(original.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        if expect == "extra.yaml" {
            std::fs::write(tmp.path().join("extra.yaml"), original).unwrap();
        }
        let out = validate(tmp.path());
        assert!(
            !out.status.success(),
            "validation passed with {file} broken ({expect}):\n{}",
            text(&out)
        );
        assert!(text(&out).contains(expect), "{expect}:\n{}", text(&out));
    }
}

#[test]
fn keda_scales_the_workers_on_the_consumers_the_dispatcher_creates() {
    let objects = objects();
    let so = find(&objects, "ScaledObject", "jetinfer-worker");
    let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
    find(&objects, "Deployment", target);
    let triggers = so["spec"]["triggers"].as_array().unwrap();
    for p in Priority::ALL {
        let t = triggers
            .iter()
            .find(|t| t["metadata"]["stream"] == jobs_stream(p))
            .unwrap_or_else(|| panic!("no trigger on stream {}", jobs_stream(p)));
        assert_eq!(t["type"], "nats-jetstream");
        assert_eq!(t["metadata"]["consumer"], consumer_name(p).as_str(), "{t}");
        // The monitoring endpoint is the `nats` Service's monitor port.
        let endpoint = t["metadata"]["natsServerMonitoringEndpoint"]
            .as_str()
            .unwrap();
        let (host, port) = endpoint.rsplit_once(':').unwrap();
        assert!(host.starts_with("nats."), "{endpoint}");
        let nats = find(&objects, "Service", "nats");
        assert!(
            nats["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64() == port.parse().ok()),
            "Service nats has no port {port}"
        );
    }
    // P0 scales the pool soonest: its threshold is the lowest.
    let threshold = |p: Priority| -> u64 {
        triggers
            .iter()
            .find(|t| t["metadata"]["stream"] == jobs_stream(p))
            .and_then(|t| t["metadata"]["lagThreshold"].as_str()?.parse().ok())
            .unwrap()
    };
    assert!(threshold(Priority::P0) < threshold(Priority::P1));
    assert!(threshold(Priority::P1) < threshold(Priority::P2));
}

#[test]
fn every_container_parses_with_its_binary_and_probes_the_metrics_port() {
    let objects = objects();
    for name in ["jetinfer-dispatcher", "jetinfer-worker"] {
        let d = find(&objects, "Deployment", name);
        let c = container(d);
        let command: Vec<String> = strings(&c["command"])
            .into_iter()
            .chain(strings(&c["args"]))
            .collect();
        assert_eq!(command[0], name, "{name} runs its own binary");
        let exe = binary(&command[0]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = check_config(&exe, &command[1..], environment(c));
        assert!(
            out.status.success(),
            "{name}: `{} --check-config` refused:\n{}",
            command.join(" "),
            text(&out)
        );
        assert!(
            !text(&out).contains("stand-in-nats_password"),
            "{name} prints a password"
        );
        // Probes on the --metrics-addr port: /healthz for liveness; /readyz for readiness,
        // except the dispatcher's, whose standby is 503 on /readyz by design (a Deployment
        // waiting for it would never finish a rollout).
        let i = command.iter().position(|a| a == "--metrics-addr").unwrap();
        let port: u64 = command[i + 1].rsplit(':').next().unwrap().parse().unwrap();
        let ports = c["ports"].as_array().unwrap();
        let named = ports.iter().find(|p| p["name"] == "metrics").unwrap();
        assert_eq!(named["containerPort"].as_u64(), Some(port), "{name}");
        let ready = match name {
            "jetinfer-dispatcher" => "/healthz",
            _ => "/readyz",
        };
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], ready, "{name}");
        if name == "jetinfer-dispatcher" {
            assert!(text(&out).contains("lease: true"), "{}", text(&out));
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{name} {probe}");
        }
        // Credentials come from Secrets, never from the manifest.
        for e in c["env"].as_array().unwrap() {
            let n = e["name"].as_str().unwrap();
            if n.contains("PASSWORD") || n == "REDIS_URL" || n == "NATS_USER" {
                assert!(
                    e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                    "{name} {n}: {e}"
                );
            }
        }
    }
}

#[test]
fn workers_ask_for_a_gpu_and_outlast_their_drain_and_dispatchers_hold_a_lease() {
    let objects = objects();
    let w = find(&objects, "Deployment", "jetinfer-worker");
    let c = container(w);
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1, "{c}");
    let env = environment(c);
    let drain_ms: u64 = env["JETINFER_DRAIN_MS"].parse().unwrap();
    let grace = w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    // SIGTERM starts the drain; the kubelet's SIGKILL must come after it has finished.
    assert!(
        grace * 1000 >= drain_ms + 5_000,
        "grace {grace} s does not outlast the drain {drain_ms} ms"
    );
    // The models file comes from the ConfigMap, at the path the worker is given.
    let models = find(&objects, "ConfigMap", "jetinfer-models");
    assert!(models["data"]["models.toml"]
        .as_str()
        .unwrap()
        .contains("[[models]]"));
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(env["JETINFER_MODELS"], format!("{mount}/models.toml"));

    // Two dispatchers, the lease on (only its holder schedules: docs/architecture.md, "More
    // than one dispatcher"; JETINFER_LEASE is parsed by --check-config above), rolled out
    // new-pod-first so a standby is there whenever the active one stops, and at most one
    // taken at a time by a voluntary disruption.
    let d = find(&objects, "Deployment", "jetinfer-dispatcher");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(environment(container(d))["JETINFER_LEASE"], "true");
    let rolling = &d["spec"]["strategy"];
    assert_eq!(rolling["type"], "RollingUpdate", "{rolling}");
    assert_eq!(rolling["rollingUpdate"]["maxUnavailable"], 0, "{rolling}");
    assert_eq!(rolling["rollingUpdate"]["maxSurge"], 1, "{rolling}");
    let pdb = find(&objects, "PodDisruptionBudget", "jetinfer-dispatcher");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the budget selects the dispatcher's pods");
    }
}

//! compose.yaml without a Docker engine: it validates against the compose specification's
//! JSON schema (PyPI `check-jsonschema`, installed into .venv by scripts/setup.sh), every
//! jetinfer service's command line and environment parse with the binary's own flags
//! (`--check-config`: clap parses exactly what the container would get, then the process
//! exits without connecting), the health checks and Prometheus targets point at the
//! `--metrics-addr` ports, and the README's compose section names every service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use jetinfer_devkit::local::{binary, repo_root};
use serde_json::Value;

fn root() -> PathBuf {
    repo_root().expect("repository root")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// compose.yaml as JSON, read by the YAML library check-jsonschema itself uses.
fn compose() -> Value {
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg("import json,sys; from ruamel.yaml import YAML; print(json.dumps(YAML(typ='safe').load(open(sys.argv[1]))))")
        .arg(root().join("compose.yaml"))
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("compose.yaml as JSON")
}

fn check_schema(file: &Path) -> (bool, String) {
    let out = Command::new(venv_bin("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(file)
        .output()
        .expect("running check-jsonschema");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let (ok, text) = check_schema(&root().join("compose.yaml"));
    assert!(ok, "compose.yaml does not validate:\n{text}");
    // The check has teeth: a misspelt key fails it.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("compose.yaml");
    let original = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    std::fs::write(&broken, original.replacen("depends_on:", "depend_on:", 1)).unwrap();
    let (ok, _) = check_schema(&broken);
    assert!(
        !ok,
        "a misspelt key validated: the schema check proves nothing"
    );
}

/// A service's environment as pairs (compose allows a map or a list of `K=V`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The port of `--metrics-addr` in a command line.
fn metrics_port(command: &[String]) -> Option<String> {
    let i = command.iter().position(|a| a == "--metrics-addr")?;
    command.get(i + 1)?.rsplit(':').next().map(str::to_string)
}

#[test]
fn every_service_command_parses_with_the_binary_and_endpoints_line_up() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let mut checked = 0;
    let mut metrics_ports = BTreeMap::new();
    for (name, service) in services {
        let command = strings(&service["command"]);
        let Some(program) = command.first().filter(|c| c.starts_with("jetinfer")) else {
            continue;
        };
        let exe = binary(program).unwrap_or_else(|e| panic!("service {name}: {e}"));
        // Only the service's own environment (plus what a process needs to start): an
        // inherited NATS_URL or RUST_LOG must not make a broken file pass.
        let mut cmd = Command::new(&exe);
        cmd.args(&command[1..])
            .arg("--check-config")
            .env_clear()
            .envs(environment(service));
        for keep in ["PATH", "LD_LIBRARY_PATH", "HOME"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        let out = cmd.output().expect("running the binary");
        assert!(
            out.status.success(),
            "service {name}: `{} --check-config` refused:\n{}{}",
            command.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = metrics_port(&command)
            .unwrap_or_else(|| panic!("service {name} serves no --metrics-addr"));
        // The health check asks /readyz on that port.
        let health = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            health.contains(&format!(":{port}/readyz")),
            "service {name}: health check {health:?} does not ask /readyz on port {port}"
        );
        // Traces go to the compose file's trace backend.
        let env = environment(service);
        let endpoint = env
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| panic!("service {name} exports no traces"));
        let host = endpoint
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or_default();
        assert!(
            services.contains_key(host),
            "service {name} exports to {endpoint}, not a service"
        );
        metrics_ports.insert(name.clone(), port);
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the dispatcher and two workers, checked {checked}"
    );

    // Prometheus scrapes each of them on its metrics port, and nothing else.
    let prometheus = std::fs::read_to_string(root().join("deploy/prometheus.yml")).unwrap();
    for (name, port) in &metrics_ports {
        assert!(
            prometheus.contains(&format!("\"{name}:{port}\"")),
            "deploy/prometheus.yml does not scrape {name}:{port}"
        );
    }
    let mounted = strings(&services["prometheus"]["volumes"]).join(" ");
    assert!(mounted.contains("./deploy/prometheus.yml:"), "{mounted}");

    // The README's compose section names every service.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Docker compose")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a '## Docker compose' section");
    for name in services.keys() {
        assert!(
            section.contains(&format!("`{name}`")),
            "README's compose section does not mention `{name}`"
        );
    }
}

#[test]
fn check_config_refuses_an_unknown_flag() {
    // The command-line check would be worthless if --check-config accepted anything.
    for (program, args) in [
        ("jetinfer-dispatcher", vec!["--no-such-flag"]),
        (
            "jetinfer-worker",
            vec!["--models", "m.toml", "--no-such-flag"],
        ),
    ] {
        let out = Command::new(binary(program).unwrap())
            .args(args)
            .arg("--check-config")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "LD_LIBRARY_PATH",
                std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default(),
            )
            .output()
            .unwrap();
        assert!(!out.status.success(), "{program} accepted --no-such-flag");
    }
}

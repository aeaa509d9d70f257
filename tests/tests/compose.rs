//! compose.yaml without a Docker engine: it validates against the compose specification's
//! JSON schema (PyPI `check-jsonschema`, installed into .venv by scripts/setup.sh), every
//! jetinfer service's command line and environment parse with the binary's own flags
//! (`--check-config`: clap parses exactly what the container would get, then the process
//! exits without connecting), the health checks and Prometheus targets point at the
//! `--metrics-addr` ports, host ports are on 127.0.0.1 only and workers have none fixed
//! (so they scale), every service restarts, nothing needs Jaeger or Prometheus to start, and
//! the README's compose section names every service. Credentials: `scripts/compose-secrets.sh`
//! keeps its passwords on a second run and writes private files; every jetinfer service gets
//! its own role's NATS user and Redis URL from them (env_file), none on its command line;
//! nats-server with deploy/nats/compose.conf and redis-server with the rendered ACL file
//! (real servers) accept each role's credentials, refuse a client without any and hold each
//! role to its rights. `${VAR:-default}` is read as its default, as compose does with VAR
//! unset, except `JETINFER_SECRETS_DIR`, which points at the script's output in a temporary
//! folder. tests/tests/compose_up.rs starts the stack for real.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use jetinfer_devkit::local::{binary, repo_root};
use jetinfer_tests::cli::{check_config, combined as text, strings};
use serde_json::Value;

#[path = "compose/credentials.rs"]
mod credentials;

fn root() -> PathBuf {
    repo_root().expect("repository root")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = root().join(".venv/bin").join(name);
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// A YAML file as JSON, read by the YAML library check-jsonschema itself uses.
fn yaml(file: &Path) -> Value {
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg("import json,sys; from ruamel.yaml import YAML; print(json.dumps(YAML(typ='safe').load(open(sys.argv[1]))))")
        .arg(file)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("YAML as JSON")
}

/// What `scripts/compose-secrets.sh` wrote into a temporary folder.
struct Secrets {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Secrets {
    /// Runs the script into a new temporary folder, with compose's default host ports.
    fn generate() -> Secrets {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secrets");
        let out = secrets_script(&dir, &[]);
        assert!(out.status.success(), "compose-secrets.sh: {}", text(&out));
        Secrets { _tmp: tmp, dir }
    }

    /// One of its `NAME=value` files.
    fn vars(&self, file: &str) -> BTreeMap<String, String> {
        env_file(&self.dir.join(file))
    }

    fn var(&self, file: &str, name: &str) -> String {
        self.vars(file)
            .remove(name)
            .unwrap_or_else(|| panic!("{file} has no {name}"))
    }
}

/// Runs scripts/compose-secrets.sh on `dir` with `env` (and none of the caller's variables
/// that it reads).
fn secrets_script(dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("scripts/compose-secrets.sh"))
        .arg(dir)
        .env_remove("JETINFER_SECRETS_DIR")
        .env_remove("JETINFER_NATS_PORT")
        .env_remove("JETINFER_REDIS_PORT")
        .envs(env.iter().copied())
        .output()
        .expect("running scripts/compose-secrets.sh")
}

/// A `NAME=value` file as compose's `env_file` reads it (no comments are written).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {l:?}", path.display()));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// compose.yaml as compose reads it with JETINFER_SECRETS_DIR set to `secrets` and no other
/// variable set (every other `${…}` at its default).
fn compose(secrets: &Secrets) -> Value {
    let vars = BTreeMap::from([(
        "JETINFER_SECRETS_DIR".to_string(),
        secrets.dir.display().to_string(),
    )]);
    interpolate(yaml(&root().join("compose.yaml")), &vars)
}

/// compose.yaml as written, `${…}` left in.
fn compose_raw() -> Value {
    yaml(&root().join("compose.yaml"))
}

/// Replaces `${NAME:-default}` / `${NAME-default}` by NAME's value in `vars`, else the
/// default, and `${NAME}` by its value or nothing, in every string, as compose does.
fn interpolate(v: Value, vars: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(&s, vars)),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| interpolate(v, vars)).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, interpolate(v, vars)))
                .collect(),
        ),
        other => other,
    }
}

fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"))
            + start;
        let inner = &rest[start + 2..end];
        let (name, default) = inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .unwrap_or((inner, ""));
        out.push_str(vars.get(name).map_or(default, String::as_str));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn defaults(s: &str) -> String {
    substitute(s, &BTreeMap::new())
}

#[test]
fn interpolation_takes_the_defaults() {
    assert_eq!(defaults("a${X:-b}c${Y}d${Z-e}"), "abcde");
    assert_eq!(defaults("127.0.0.1:${P:-4222}:4222"), "127.0.0.1:4222:4222");
    let vars = BTreeMap::from([("X".to_string(), "/s".to_string())]);
    assert_eq!(
        substitute("${X:-./.secrets}/a.env ${Y}", &vars),
        "/s/a.env "
    );
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

/// A service's environment as compose gives it to the container: its `env_file`s (a path
/// or a list, relative to the repository), then `environment` (a map or a list of `K=V`),
/// which wins.
fn environment(service: &Value) -> BTreeMap<String, String> {
    let files = match &service["env_file"] {
        Value::String(f) => vec![f.clone()],
        other => strings(other),
    };
    let mut env = BTreeMap::new();
    for f in files {
        env.extend(env_file(&root().join(f)));
    }
    env.extend(declared_environment(service));
    env
}

/// A service's `environment` key alone.
fn declared_environment(service: &Value) -> BTreeMap<String, String> {
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

/// The port of `--metrics-addr` in a command line.
fn metrics_port(command: &[String]) -> Option<String> {
    let i = command.iter().position(|a| a == "--metrics-addr")?;
    command.get(i + 1)?.rsplit(':').next().map(str::to_string)
}

#[test]
fn every_service_command_parses_with_the_binary_and_endpoints_line_up() {
    let secrets = Secrets::generate();
    let compose = compose(&secrets);
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
        let out = check_config(&exe, &command[1..], environment(service));
        assert!(
            out.status.success(),
            "service {name}: `{} --check-config` refused:\n{}",
            command.join(" "),
            text(&out)
        );
        // The printed configuration (what `docker compose logs` would show) has no password.
        for secret in secrets.vars("passwords").values() {
            assert!(
                !text(&out).contains(secret.as_str()),
                "service {name}: --check-config prints a password"
            );
        }
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

    // Prometheus scrapes each of them on its metrics port: a fixed target, or every replica
    // found by DNS.
    let prometheus = yaml(&root().join("deploy/prometheus.yml"));
    let scrapes = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs");
    for (name, port) in &metrics_ports {
        let scraped = scrapes.iter().any(|job| {
            let fixed = job["static_configs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| strings(&c["targets"]).contains(&format!("{name}:{port}")));
            let by_dns = job["dns_sd_configs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| strings(&c["names"]).contains(name) && c["port"].to_string() == *port);
            fixed || by_dns
        });
        assert!(
            scraped,
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

#[test]
fn ports_stay_on_loopback_workers_scale_and_only_nats_and_redis_are_needed() {
    let compose = compose(&Secrets::generate());
    let raw = compose_raw();
    let services = compose["services"].as_object().expect("services");
    for (name, service) in services {
        // Every published port on 127.0.0.1, never all interfaces.
        for port in strings(&service["ports"]) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "service {name} publishes {port:?} beyond 127.0.0.1"
            );
        }
        assert!(
            service["restart"].is_string(),
            "service {name} has no restart policy"
        );
        // Traces and metrics are optional: no service waits for them.
        for optional in ["jaeger", "prometheus"] {
            assert!(
                service["depends_on"].get(optional).is_none(),
                "service {name} depends on {optional}: without a registry (or Jaeger) it cannot start"
            );
        }
        let command = strings(&service["command"]);
        if command.first().map(String::as_str) != Some("jetinfer-worker") {
            continue;
        }
        // No fixed host port, so `--scale` starts more than one.
        for port in strings(&service["ports"]) {
            let parts: Vec<&str> = port.split(':').collect();
            assert!(
                parts.len() == 3 && parts[1].is_empty(),
                "worker service {name} publishes a fixed host port ({port:?}): it cannot scale"
            );
        }
        // The models: a bind mount for the user's own, chosen by JETINFER_MODELS (no
        // --models flag, which would win over it).
        assert!(
            !command.iter().any(|a| a == "--models"),
            "service {name}: --models on the command line overrides JETINFER_MODELS"
        );
        let volumes = strings(&service["volumes"]).join(" ");
        assert!(
            volumes.contains(":/models:ro"),
            "service {name} mounts no models folder: {volumes}"
        );
        let models = declared_environment(&raw["services"][name.as_str()]);
        let models = models.get("JETINFER_MODELS").map(String::as_str);
        assert!(
            models.is_some_and(|m| m.starts_with("${JETINFER_MODELS:-/opt/jetinfer/models/")),
            "service {name}: JETINFER_MODELS is not the user's to set: {models:?}"
        );
    }
}

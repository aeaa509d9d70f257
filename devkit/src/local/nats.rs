//! [`NatsServer`]: a private nats-server with JetStream, on a port the server picks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::paths::nats_server_program;
use super::process::Process;
use super::wait::wait_for_tcp;
use super::LocalError;

/// How long a start may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A nats-server process with JetStream, listening on 127.0.0.1. Killed on drop, and its
/// folder (store, ports file, log) removed after.
#[derive(Debug)]
pub struct NatsServer {
    // Field order is drop order: the process goes before its folder.
    process: Process,
    program: PathBuf,
    extra_args: Vec<String>,
    /// Environment of the server process (a config file's `$VAR` secrets), kept for restarts.
    envs: Vec<(String, String)>,
    port: u16,
    monitor_url: Option<String>,
    dir: tempfile::TempDir,
}

/// The ports file nats-server writes with `--ports_file_dir`.
#[derive(serde::Deserialize)]
struct Ports {
    nats: Vec<String>,
    #[serde(default)]
    monitoring: Vec<String>,
}

impl NatsServer {
    /// Starts a nats-server with `-js -a 127.0.0.1 -p -1 -m -1` and a fresh store folder;
    /// returns once the client port accepts connections. The binary is
    /// `$JETINFER_NATS_SERVER`, else `<repo>/.venv/bin/nats-server`, else `nats-server`
    /// on `PATH`.
    ///
    /// `JETINFER_NATS_ARGS` (whitespace-separated) adds arguments to every server started
    /// this way, e.g. `--profile 6060` to read nats-server's Go pprof during a benchmark.
    pub fn start() -> Result<NatsServer, LocalError> {
        let extra = std::env::var("JETINFER_NATS_ARGS").unwrap_or_default();
        NatsServer::start_with_args(extra.split_whitespace())
    }

    /// Like [`NatsServer::start`], with extra command-line arguments (e.g. `-c <config file>`).
    pub fn start_with_args(
        extra_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<NatsServer, LocalError> {
        NatsServer::start_with_env(extra_args, std::iter::empty::<(String, String)>())
    }

    /// Like [`NatsServer::start_with_args`], with environment variables for the server
    /// process: a config file given with `-c` reads its secrets from them (`$NAME`), as
    /// `deploy/nats/jetinfer.conf` does.
    pub fn start_with_env(
        extra_args: impl IntoIterator<Item = impl Into<String>>,
        envs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Result<NatsServer, LocalError> {
        let program = nats_server_program()?;
        let dir = tempfile::Builder::new()
            .prefix("jetinfer-nats-")
            .tempdir()
            .map_err(LocalError::io("cannot create a folder for nats-server"))?;
        let extra_args: Vec<String> = extra_args.into_iter().map(Into::into).collect();
        let envs: Vec<(String, String)> = envs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let (process, port, monitor_url) = launch(&program, dir.path(), None, &extra_args, &envs)?;
        Ok(NatsServer {
            process,
            program,
            extra_args,
            envs,
            port,
            monitor_url,
            dir,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint (`/jsz`, `/varz`), e.g. `http://127.0.0.1:8222`.
    pub fn monitor_url(&self) -> Option<&str> {
        self.monitor_url.as_deref()
    }

    /// The pid of the current (or last) server process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL: the server dies without a goodbye; JetStream recovers its store on restart.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Graceful shutdown (SIGTERM, SIGKILL after 10 s).
    pub fn stop(&mut self) {
        self.process.stop_within(Duration::from_secs(10));
    }

    /// Stops the server if it runs and starts it again on the same port with the same
    /// store folder, so streams and their messages survive; returns once it accepts.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.stop();
        let (process, _, monitor_url) = launch(
            &self.program,
            self.dir.path(),
            Some(self.port),
            &self.extra_args,
            &self.envs,
        )?;
        self.process = process;
        self.monitor_url = monitor_url;
        Ok(())
    }

    /// The folder holding the store (`js/`), the ports file and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JetStream store folder.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// The server's log, across restarts.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Starts one server process in `dir` and waits until its client port accepts.
fn launch(
    program: &Path,
    dir: &Path,
    port: Option<u16>,
    extra: &[String],
    envs: &[(String, String)],
) -> Result<(Process, u16, Option<String>), LocalError> {
    // A killed server leaves its ports file behind; remove it so only the new one is read.
    for stale in ports_files(dir) {
        let _ = std::fs::remove_file(stale);
    }
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let store = dir.join("js");
    let mut args: Vec<String> = [
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        &port_arg,
        "-m",
        "-1",
        "--store_dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(store.display().to_string());
    args.push("--ports_file_dir".into());
    args.push(dir.display().to_string());
    args.extend(extra.iter().cloned());
    let mut process = Process::start(
        "nats-server",
        program,
        &args,
        envs.iter().map(|(k, v)| (k, v)),
        dir.join("nats.log"),
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    let ports = loop {
        // Any ports file will do: the pid in its name may be a wrapper script's child.
        if let Some(ports) = ports_files(dir).iter().find_map(|f| read_ports(f)) {
            break ports;
        }
        process.check_running("starting")?;
        if Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: "nats-server writing its ports file".into(),
                timeout: START_TIMEOUT,
                detail: format!("; log:\n{}", process.log_tail(20)),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let port = ports
        .nats
        .first()
        .and_then(|url| url.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| {
            LocalError::NotFound(format!(
                "no client port in the ports file: {:?}",
                ports.nats
            ))
        })?;
    let monitor_url = ports.monitoring.first().cloned();
    let remaining = deadline.saturating_duration_since(Instant::now());
    wait_for_tcp(port, remaining, || process.check_running("starting"))?;
    tracing::debug!(port, pid = process.pid(), "nats-server ready");
    Ok((process, port, monitor_url))
}

fn ports_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nats-server_") && n.ends_with(".ports"))
        })
        .collect()
}

/// None while the file is still being written (it may be read half-way).
fn read_ports(path: &Path) -> Option<Ports> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_file_parses() {
        let p: Ports = serde_json::from_str(
            r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":["http://127.0.0.1:41235"]}"#,
        )
        .unwrap();
        assert_eq!(p.nats[0].rsplit(':').next(), Some("41234"));
        assert_eq!(p.monitoring.len(), 1);
    }
}

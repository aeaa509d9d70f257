//! [`RedisSentinel`]: a Redis primary with replicas watched by three Sentinels, all real
//! redis-server processes on free loopback ports, for tests of jetinfer's results across a
//! Redis failover (issue 13).
//!
//! Sentinels decide fast here (`down-after-milliseconds` 1000, `failover-timeout` 3000), so
//! a killed primary is replaced within a few seconds. A data node keeps its port across
//! [`RedisSentinel::kill`] and [`RedisSentinel::restart`]; it comes back as a replica of
//! the current primary. Persistence is off: a restarted node resyncs from the primary.
//! Servers are asked with a few lines of RESP over TCP, so the harness needs no Redis crate.

use std::path::PathBuf;
use std::time::Duration;

use jetinfer_devkit::local::{LocalError, Process};

use crate::cluster::free_ports;

mod resp;

pub use resp::{command, commands, Reply};

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "jetinfer";
/// How many Sentinels run; a quorum of 2 declares the primary down.
const SENTINELS: usize = 3;
/// How long servers may take to accept connections, and the topology to settle.
const START: Duration = Duration::from_secs(30);

/// One redis-server: its port and, while it runs, its process.
#[derive(Debug)]
struct Server {
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
}

/// The running topology. Dropping it kills every server (SIGKILL) and removes the folder.
#[derive(Debug)]
pub struct RedisSentinel {
    // Field order is drop order: the processes before their folder.
    data: Vec<Server>,
    sentinels: Vec<Server>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts a primary, `replicas` replicas and three Sentinels, and returns once every
    /// replica is in sync and every Sentinel sees all replicas and the other Sentinels
    /// (without which it could not vote a failover).
    pub async fn start(replicas: usize) -> Result<RedisSentinel, LocalError> {
        let dir = tempfile::Builder::new()
            .prefix("jetinfer-sentinel-")
            .tempdir()
            .map_err(|source| LocalError::Io {
                what: "cannot create a folder for Redis Sentinel".into(),
                source,
            })?;
        let ports = free_ports(1 + replicas + SENTINELS)?;
        let primary_port = ports[0];
        let mut data = Vec::new();
        for (i, port) in ports[..=replicas].iter().enumerate() {
            let node_dir = dir.path().join(format!("r{i}"));
            mkdir(&node_dir)?;
            let mut args = data_args(*port, &node_dir);
            if i > 0 {
                args.extend([
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    primary_port.to_string(),
                ]);
            }
            data.push(Server {
                port: *port,
                args,
                log: node_dir.join("redis.log"),
                process: None,
            });
        }
        let mut sentinels = Vec::new();
        for (i, port) in ports[1 + replicas..].iter().enumerate() {
            let node_dir = dir.path().join(format!("s{i}"));
            mkdir(&node_dir)?;
            let conf = node_dir.join("sentinel.conf");
            write(&conf, &sentinel_config(*port, &node_dir, primary_port))?;
            sentinels.push(Server {
                port: *port,
                args: vec![conf.display().to_string(), "--sentinel".into()],
                log: node_dir.join("sentinel.log"),
                process: None,
            });
        }
        let mut topology = RedisSentinel {
            data,
            sentinels,
            dir,
        };
        for s in topology
            .data
            .iter_mut()
            .chain(topology.sentinels.iter_mut())
        {
            s.process = Some(spawn(s)?);
        }
        let all: Vec<u16> = topology
            .data
            .iter()
            .chain(&topology.sentinels)
            .map(|s| s.port)
            .collect();
        for port in all {
            wait_until(
                START,
                &format!("redis on port {port} answers PING"),
                || async move {
                    matches!(command(port, &["PING"]).await, Ok(Reply::Simple(p)) if p == "PONG")
                },
            )
            .await?;
        }
        topology.wait_settled(replicas).await?;
        Ok(topology)
    }

    /// Waits until the primary has `replicas` replicas online (synced) and every Sentinel
    /// sees them and the other Sentinels.
    pub async fn wait_settled(&self, replicas: usize) -> Result<(), LocalError> {
        let sentinel_ports: Vec<u16> = self.sentinels.iter().map(|s| s.port).collect();
        wait_until(
            START,
            "the Sentinels see every replica and each other",
            || {
                let sentinel_ports = sentinel_ports.clone();
                async move {
                    let Ok(primary) = self.primary_port().await else {
                        return false;
                    };
                    if online_replicas(primary).await != replicas {
                        return false;
                    }
                    for port in sentinel_ports {
                        let count = |sub: &'static str| async move {
                            match command(port, &["SENTINEL", sub, MASTER_NAME]).await {
                                Ok(Reply::Array(items)) => items.len(),
                                _ => 0,
                            }
                        };
                        if count("replicas").await != replicas
                            || count("sentinels").await != SENTINELS - 1
                        {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await
    }

    /// `redis+sentinel://` URL naming the three Sentinels and the master name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The data nodes' ports, primary first as started.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|s| s.port).collect()
    }

    /// The primary's port, as the first Sentinel that answers names it.
    pub async fn primary_port(&self) -> Result<u16, LocalError> {
        let mut last = String::new();
        for s in &self.sentinels {
            match command(
                s.port,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            )
            .await
            {
                Ok(Reply::Array(addr)) if addr.len() == 2 => {
                    if let Some(port) = addr[1].text().and_then(|p| p.parse().ok()) {
                        return Ok(port);
                    }
                }
                other => last = format!("{other:?}"),
            }
        }
        Err(LocalError::NotFound(format!(
            "no Sentinel names a primary: {last}"
        )))
    }

    /// Waits until every Sentinel names a primary other than `old`, and that server says
    /// it is the primary; returns its port.
    pub async fn wait_for_new_primary(
        &self,
        old: u16,
        timeout: Duration,
    ) -> Result<u16, LocalError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut named = Vec::new();
            for s in &self.sentinels {
                if let Ok(Reply::Array(addr)) = command(
                    s.port,
                    &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                )
                .await
                {
                    named.push(
                        addr.get(1)
                            .and_then(Reply::text)
                            .and_then(|p| p.parse::<u16>().ok()),
                    );
                }
            }
            if let Some(Some(port)) = named.first().copied() {
                if port != old
                    && named.iter().all(|n| *n == Some(port))
                    && self.role(port).await.as_deref() == Some("master")
                {
                    return Ok(port);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalError::Timeout {
                    what: format!("a new primary in place of port {old}"),
                    timeout,
                    detail: format!("the Sentinels name {named:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ROLE`'s first word on the server at `port` (`master`, `slave`), if it answers.
    pub async fn role(&self, port: u16) -> Option<String> {
        match command(port, &["ROLE"]).await {
            Ok(Reply::Array(items)) => items.first().and_then(Reply::text),
            _ => None,
        }
    }

    /// Asks the Sentinels for a graceful failover (`SENTINEL FAILOVER`): the primary is
    /// demoted to a replica and keeps running, so clients' old connections to it now get
    /// `READONLY` on writes.
    pub async fn failover(&self) -> Result<(), LocalError> {
        match command(
            self.sentinels[0].port,
            &["SENTINEL", "FAILOVER", MASTER_NAME],
        )
        .await
        {
            Ok(Reply::Simple(_)) => Ok(()),
            other => Err(LocalError::NotFound(format!(
                "SENTINEL FAILOVER answered {other:?}"
            ))),
        }
    }

    /// SIGKILL of the data node on `port`: no goodbye to anyone.
    pub fn kill(&mut self, port: u16) {
        if let Some(mut p) = self.server_mut(port).process.take() {
            p.kill();
        }
    }

    /// SIGSTOP / SIGCONT of the data node on `port` (a replica that stops acknowledging).
    pub fn pause(&mut self, port: u16, paused: bool) {
        if let Some(p) = self.server_mut(port).process.as_mut() {
            if paused {
                p.pause();
            } else {
                p.resume();
            }
        }
    }

    /// Starts the data node on `port` again, as a replica of the current primary.
    pub async fn restart(&mut self, port: u16) -> Result<(), LocalError> {
        self.kill(port);
        let primary = self.primary_port().await?;
        let dir = self.dir.path().join(format!("restart-{port}"));
        mkdir(&dir)?;
        let server = self.server_mut(port);
        server.args = data_args(port, &dir);
        server.args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
        server.process = Some(spawn(server)?);
        wait_until(
            START,
            &format!("restarted redis on port {port}"),
            || async move { command(port, &["PING"]).await.is_ok() },
        )
        .await
    }

    /// `WAIT`s on the primary for `replicas` replicas to hold every write made so far (by
    /// anyone: a write of our own first moves this connection's offset to the latest);
    /// returns how many did within `timeout`.
    pub async fn replicated(&self, replicas: usize, timeout: Duration) -> Result<i64, LocalError> {
        let primary = self.primary_port().await?;
        let reply = commands(
            primary,
            &[
                &["SET", "jetinfer-test:replication-mark", "1"],
                &[
                    "WAIT",
                    &replicas.to_string(),
                    &timeout.as_millis().to_string(),
                ],
            ],
        )
        .await
        .map_err(LocalError::NotFound)?;
        match reply.last() {
            Some(Reply::Int(n)) => Ok(*n),
            other => Err(LocalError::NotFound(format!("WAIT answered {other:?}"))),
        }
    }

    /// Every server's log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.data
            .iter()
            .chain(&self.sentinels)
            .map(|s| {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- port {} ---\n{}",
                    s.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn server_mut(&mut self, port: u16) -> &mut Server {
        self.data
            .iter_mut()
            .find(|s| s.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }
}

/// A data node: loopback only, no persistence, its files in `dir`.
fn data_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// A Sentinel's config (Sentinel rewrites it as it learns the topology, so it is a file).
fn sentinel_config(port: u16, dir: &std::path::Path, primary: u16) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\ndir \"{}\"\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 3000\n\
         sentinel parallel-syncs {MASTER_NAME} 2\n",
        dir.display()
    )
}

fn spawn(server: &Server) -> Result<Process, LocalError> {
    let program = std::env::var_os("JETINFER_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"));
    Process::start(
        format!("redis-{}", server.port),
        program,
        &server.args,
        std::iter::empty::<(&str, &str)>(),
        &server.log,
    )
}

fn mkdir(dir: &std::path::Path) -> Result<(), LocalError> {
    std::fs::create_dir_all(dir).map_err(|source| LocalError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })
}

fn write(path: &std::path::Path, text: &str) -> Result<(), LocalError> {
    std::fs::write(path, text).map_err(|source| LocalError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<(), LocalError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: what.to_string(),
                timeout,
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How many replicas the primary at `port` lists as `online` in `INFO replication` (a
/// replica still loading its first copy is listed, but does not acknowledge writes yet).
async fn online_replicas(port: u16) -> usize {
    let Some(info) = command(port, &["INFO", "replication"])
        .await
        .ok()
        .and_then(|r| r.text())
    else {
        return 0;
    };
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_config_monitors_the_primary_with_quick_timeouts() {
        let text = sentinel_config(26001, std::path::Path::new("/x"), 7001);
        assert!(text.contains("port 26001"));
        assert!(text.contains("sentinel monitor jetinfer 127.0.0.1 7001 2"));
        assert!(text.contains("down-after-milliseconds jetinfer 1000"));
    }
}

//! [`NatsCluster`]: a NATS cluster of real nats-servers on loopback, for tests of
//! jetinfer's replicated streams (issue 13).
//!
//! Each node gets a config file with its `server_name`, a client port, a cluster (route)
//! port, a monitoring port and a JetStream store folder of its own, and routes to every
//! node. The ports are chosen before any server starts, since each node's routes must name
//! the others' cluster ports; a node keeps its ports and store across
//! [`NatsCluster::kill`] and [`NatsCluster::restart`], so a restarted node rejoins with its
//! data and catches up from the stream leaders.
//!
//! What the cluster thinks is read from each node's monitoring endpoint (`/jsz`): the
//! JetStream meta leader, and a node's *own* copy of a stream (its last sequence), which
//! the JetStream API cannot show since stream info always comes from the stream's leader.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jetinfer_devkit::local::{repo_root, LocalError, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a node may take to accept clients after it was started.
const NODE_START: Duration = Duration::from_secs(20);
/// How long the nodes may take to find each other and elect a JetStream meta leader.
const META_ELECTION: Duration = Duration::from_secs(30);

/// The cluster's name in every node's `cluster {}` block.
const CLUSTER_NAME: &str = "jetinfer-test";

/// One node: its name, ports and files, and its process while it runs.
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

/// A running NATS cluster with JetStream on every node. Dropping it kills every node
/// (SIGKILL) and removes their folders.
#[derive(Debug)]
pub struct NatsCluster {
    // Field order is drop order: the processes before their folder.
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// A node's own copy of a stream, as its `/jsz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaState {
    pub messages: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl NatsCluster {
    /// Starts `size` nodes (`n1` … `n<size>`) and returns once every node accepts clients
    /// and all of them agree on a JetStream meta leader.
    pub async fn start(size: usize) -> Result<NatsCluster, LocalError> {
        assert!(size >= 1, "a cluster needs a node");
        let dir = tempfile::Builder::new()
            .prefix("jetinfer-nats-cluster-")
            .tempdir()
            .map_err(|source| LocalError::Io {
                what: "cannot create a folder for the cluster".into(),
                source,
            })?;
        let ports = free_ports(3 * size)?;
        let cluster_ports: Vec<u16> = ports[size..2 * size].to_vec();
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("n{}", i + 1);
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(node_dir.join("js")).map_err(|source| LocalError::Io {
                what: format!("cannot create {}", node_dir.display()),
                source,
            })?;
            let node = Node {
                client_port: ports[i],
                cluster_port: cluster_ports[i],
                monitor_port: ports[2 * size + i],
                config: node_dir.join("nats.conf"),
                log: node_dir.join("nats.log"),
                name,
                process: None,
            };
            let text = node_config(&node, &node_dir.join("js"), &cluster_ports);
            std::fs::write(&node.config, text).map_err(|source| LocalError::Io {
                what: format!("cannot write {}", node.config.display()),
                source,
            })?;
            nodes.push(node);
        }
        let mut cluster = NatsCluster { nodes, dir };
        // All at once: a node alone cannot elect anything, so none waits for another.
        for node in &mut cluster.nodes {
            node.process = Some(spawn(node)?);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_accepting(i).await?;
        }
        cluster.wait_for_meta_leader(META_ELECTION).await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated: what `--nats-url` takes, so a process
    /// connects to whichever node answers and fails over to the others.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn url(&self, name: &str) -> String {
        format!("nats://127.0.0.1:{}", self.node(name).client_port)
    }

    /// The nodes' names (`n1` …), in start order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The folder holding every node's config, store and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL of one node: no goodbye to its routes or clients; its store stays.
    pub fn kill(&mut self, name: &str) {
        let node = self.node_mut(name);
        if let Some(mut p) = node.process.take() {
            p.kill();
        }
    }

    /// Starts a node again (killing it first if it still runs) with the same ports and
    /// store; returns once it accepts clients. Catching up is not waited for: see
    /// [`NatsCluster::replica_state`].
    pub async fn restart(&mut self, name: &str) -> Result<(), LocalError> {
        self.kill(name);
        let i = self.index(name);
        self.nodes[i].process = Some(spawn(&self.nodes[i])?);
        self.wait_accepting(i).await
    }

    /// True while the node's process runs.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.node_mut(name)
            .process
            .as_mut()
            .is_some_and(Process::is_running)
    }

    /// A node's log, across restarts.
    pub fn log(&self, name: &str) -> String {
        std::fs::read(&self.node(name).log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// A node's `/jsz` (JetStream) monitoring report, with `query` (e.g.
    /// `accounts=true&streams=true`).
    pub async fn jsz(&self, name: &str, query: &str) -> Result<serde_json::Value, LocalError> {
        let port = self.node(name).monitor_port;
        let body = http_get(port, &format!("/jsz?{query}")).await?;
        serde_json::from_str(&body).map_err(|e| {
            LocalError::NotFound(format!("node {name}: /jsz is not JSON ({e}): {body}"))
        })
    }

    /// The JetStream meta leader as `name` sees it (`None` while there is none).
    pub async fn meta_leader_seen_by(&self, name: &str) -> Result<Option<String>, LocalError> {
        let jsz = self.jsz(name, "").await?;
        Ok(jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_string))
    }

    /// Waits until every running node names the same JetStream meta leader.
    pub async fn wait_for_meta_leader(&mut self, timeout: Duration) -> Result<String, LocalError> {
        self.wait_for_meta_leader_other_than(None, timeout).await
    }

    /// [`Self::wait_for_meta_leader`], for a leader other than `old`: right after a meta
    /// leader is killed, the survivors may still agree on it until their election timeout
    /// passes.
    pub async fn wait_for_meta_leader_other_than(
        &mut self,
        old: Option<&str>,
        timeout: Duration,
    ) -> Result<String, LocalError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for name in self.names() {
                if self.is_running(&name) {
                    seen.push(self.meta_leader_seen_by(&name).await.ok().flatten());
                }
            }
            if let Some(Some(leader)) = seen.first() {
                let agreed = seen.iter().all(|s| s.as_deref() == Some(leader.as_str()));
                if agreed && old != Some(leader.as_str()) {
                    return Ok(leader.clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalError::Timeout {
                    what: "the JetStream meta leader elected".into(),
                    timeout,
                    detail: format!(" (each running node's view: {seen:?})"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `name`'s own copy of `stream` (from its `/jsz`), or `None` if it holds none (yet).
    pub async fn replica_state(
        &self,
        name: &str,
        stream: &str,
    ) -> Result<Option<ReplicaState>, LocalError> {
        let jsz = self.jsz(name, "accounts=true&streams=true").await?;
        let streams = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
        for s in streams {
            if s["name"].as_str() == Some(stream) {
                let state = &s["state"];
                let n = |k: &str| state[k].as_u64().unwrap_or(0);
                return Ok(Some(ReplicaState {
                    messages: n("messages"),
                    first_seq: n("first_seq"),
                    last_seq: n("last_seq"),
                }));
            }
        }
        Ok(None)
    }

    /// The running node holding a client connection named `client` (the dispatcher's
    /// `--id`, a worker's id), from each node's `/connz`; `None` if no node lists it.
    pub async fn node_of_client(&mut self, client: &str) -> Option<String> {
        for name in self.names() {
            if !self.is_running(&name) {
                continue;
            }
            let port = self.node(&name).monitor_port;
            let Ok(body) = http_get(port, "/connz?limit=1024").await else {
                continue;
            };
            let Ok(connz) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let held = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"].as_str() == Some(client));
            if held {
                return Some(name);
            }
        }
        None
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    fn node(&self, name: &str) -> &Node {
        &self.nodes[self.index(name)]
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        let i = self.index(name);
        &mut self.nodes[i]
    }

    /// Polls until node `i` accepts TCP connections on its client and monitoring ports,
    /// failing at once if its process ended.
    async fn wait_accepting(&mut self, i: usize) -> Result<(), LocalError> {
        let deadline = tokio::time::Instant::now() + NODE_START;
        let node = &mut self.nodes[i];
        for port in [node.client_port, node.monitor_port] {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                if let Some(p) = node.process.as_mut() {
                    p.check_running("starting")?;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(LocalError::Timeout {
                        what: format!("node {} accepting on port {port}", node.name),
                        timeout: NODE_START,
                        detail: String::new(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// The config file of `node`: its own ports and store, routes to every cluster port (a
/// route to itself is ignored by the server), and short enough server names to read in
/// stream info (`cluster.leader`).
fn node_config(node: &Node, store: &Path, cluster_ports: &[u16]) -> String {
    let routes: Vec<String> = cluster_ports
        .iter()
        .map(|p| format!("    \"nats-route://127.0.0.1:{p}\""))
        .collect();
    format!(
        "server_name: \"{name}\"\n\
         listen: \"127.0.0.1:{client}\"\n\
         http: \"127.0.0.1:{monitor}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         cluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [\n{routes}\n  ]\n}}\n",
        name = node.name,
        client = node.client_port,
        monitor = node.monitor_port,
        store = store.display(),
        cluster = node.cluster_port,
        routes = routes.join("\n"),
    )
}

/// Starts a node's server process from its config file.
fn spawn(node: &Node) -> Result<Process, LocalError> {
    let config = node.config.display().to_string();
    Process::start(
        format!("nats-server {}", node.name),
        nats_server_program()?,
        ["-c", config.as_str()],
        std::iter::empty::<(&str, &str)>(),
        &node.log,
    )
}

/// The nats-server the rest of the harness uses: `$JETINFER_NATS_SERVER`, else
/// `<repo>/.venv/bin/nats-server` (scripts/setup.sh pins its version), else `PATH`.
fn nats_server_program() -> Result<PathBuf, LocalError> {
    if let Some(p) = std::env::var_os("JETINFER_NATS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let venv = repo_root()?.join(".venv/bin/nats-server");
    Ok(if venv.is_file() {
        venv
    } else {
        PathBuf::from("nats-server")
    })
}

/// `n` distinct free loopback ports. They are all held open until every one is chosen, so
/// none is handed out twice; another process could still take one before the servers bind
/// it, which a test run would show as a node that fails to start.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, LocalError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LocalError::Io {
            what: "cannot find a free port".into(),
            source,
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| LocalError::Io {
            what: "cannot read a bound port".into(),
            source,
        })
}

/// The body of `GET path` on a loopback port (HTTP/1.0: the server closes when done).
async fn http_get(port: u16, path: &str) -> Result<String, LocalError> {
    let io = |what: String| move |source| LocalError::Io { what, source };
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(io(format!("cannot connect to port {port}")))?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .map_err(io(format!("cannot send GET {path}")))?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .map_err(|_| LocalError::Timeout {
            what: format!("GET {path} on port {port}"),
            timeout: Duration::from_secs(5),
            detail: String::new(),
        })?
        .map_err(io(format!("cannot read GET {path}")))?;
    let text = String::from_utf8_lossy(&response);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err(LocalError::NotFound(format!(
            "GET {path} on port {port}: no HTTP body in {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_node_its_ports_and_every_route() {
        let node = Node {
            name: "n2".into(),
            client_port: 1001,
            cluster_port: 2002,
            monitor_port: 3003,
            config: PathBuf::from("/x/nats.conf"),
            log: PathBuf::from("/x/nats.log"),
            process: None,
        };
        let text = node_config(&node, Path::new("/x/js"), &[2001, 2002, 2003]);
        assert!(text.contains("server_name: \"n2\""));
        assert!(text.contains("listen: \"127.0.0.1:1001\""));
        assert!(text.contains("http: \"127.0.0.1:3003\""));
        assert!(text.contains("store_dir: \"/x/js\""));
        assert!(text.contains("listen: \"127.0.0.1:2002\""));
        for p in [2001, 2002, 2003] {
            assert!(text.contains(&format!("nats-route://127.0.0.1:{p}")));
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(9).unwrap();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 9);
    }
}

//! [`LocalStack`]: NATS, Redis, a dispatcher and N workers on this machine, ready to serve.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;

use super::paths::{binary, repo_root};
use super::process::Process;
use super::wait::{wait_for_stream, wait_for_workers};
use super::{LocalError, NatsServer, RedisServer};
use jetinfer_client::{Client, ClientError, StoreConfig};

/// How long processes get to exit after SIGTERM in [`LocalStack::stop`].
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the stack is started with; see [`LocalStack::builder`].
#[derive(Debug, Clone)]
pub struct LocalStackBuilder {
    nats_url: Option<String>,
    redis_url: Option<String>,
    workers: usize,
    models: Option<PathBuf>,
    dispatcher: bool,
    dispatcher_args: Vec<String>,
    worker_args: Vec<String>,
    envs: Vec<(String, String)>,
    log_dir: Option<PathBuf>,
    timeout: Duration,
}

/// Everything needed to start another worker or dispatcher later.
#[derive(Debug)]
struct Spec {
    models: PathBuf,
    dispatcher_args: Vec<String>,
    worker_args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// Where the process logs go: a kept folder, or a temporary one removed on drop.
#[derive(Debug)]
enum LogDir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl LogDir {
    fn path(&self) -> &Path {
        match self {
            LogDir::Kept(p) => p,
            LogDir::Temp(t) => t.path(),
        }
    }
}

/// A running local deployment. Dropping it kills everything it started (SIGKILL);
/// [`LocalStack::stop`] shuts down gracefully.
#[derive(Debug)]
pub struct LocalStack {
    // Field order is drop order: workers, then the dispatcher, then the servers.
    workers: Vec<Process>,
    dispatcher: Option<Process>,
    nats: Option<NatsServer>,
    redis: Option<RedisServer>,
    nats_url: String,
    redis_url: String,
    spec: Spec,
    next_worker: usize,
    log_dir: LogDir,
}

impl LocalStack {
    /// A builder with one worker, a dispatcher, servers started here, the models of
    /// `<repo>/models/out/models.toml`, and a 120 s start timeout (loading and warming
    /// models on a GPU takes a while).
    pub fn builder() -> LocalStackBuilder {
        LocalStackBuilder {
            nats_url: None,
            redis_url: None,
            workers: 1,
            models: None,
            dispatcher: true,
            dispatcher_args: Vec::new(),
            worker_args: Vec::new(),
            envs: Vec::new(),
            log_dir: None,
            timeout: Duration::from_secs(120),
        }
    }
}

impl LocalStackBuilder {
    /// Use this NATS server instead of starting one.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = Some(url.into());
        self
    }

    /// Use this Redis instead of starting one.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// How many workers to start (`worker-0` …); 0 starts none.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The workers' model file (`--models`).
    pub fn models(mut self, path: impl Into<PathBuf>) -> Self {
        self.models = Some(path.into());
        self
    }

    /// Whether to start a dispatcher (default true).
    pub fn dispatcher(mut self, start: bool) -> Self {
        self.dispatcher = start;
        self
    }

    /// Extra arguments for the dispatcher.
    pub fn dispatcher_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.dispatcher_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Extra arguments for every worker.
    pub fn worker_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.worker_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the dispatcher and workers (e.g. `RUST_LOG`); they
    /// inherit this process's environment too.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Keep the logs in this folder (created if needed) instead of a temporary one.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// How long starting may take in all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the servers (those without a URL), the dispatcher, and the workers, and
    /// returns once the jobs stream exists and every worker announced it is ready.
    pub async fn start(self) -> Result<LocalStack, LocalError> {
        let models = match self.models {
            Some(m) => m,
            None => repo_root()?.join("models/out/models.toml"),
        };
        if self.workers > 0 && !models.is_file() {
            return Err(LocalError::NotFound(format!(
                "model file {} not found: run models/export.py first",
                models.display()
            )));
        }
        // Look the binaries up before starting anything, so a missing build fails fast.
        if self.dispatcher {
            binary("jetinfer-dispatcher")?;
        }
        if self.workers > 0 {
            binary("jetinfer-worker")?;
        }
        let log_dir = match self.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(LocalError::io(format!("cannot create {}", dir.display())))?;
                LogDir::Kept(dir)
            }
            None => LogDir::Temp(
                tempfile::Builder::new()
                    .prefix("jetinfer-logs-")
                    .tempdir()
                    .map_err(LocalError::io("cannot create a log folder"))?,
            ),
        };
        let (nats, redis) =
            start_servers(self.nats_url.is_none(), self.redis_url.is_none()).await?;
        let nats_url = self
            .nats_url
            .or_else(|| nats.as_ref().map(NatsServer::url))
            .expect("a URL or a server: this is a bug");
        let redis_url = self
            .redis_url
            .or_else(|| redis.as_ref().map(RedisServer::url))
            .expect("a URL or a server: this is a bug");
        let mut stack = LocalStack {
            workers: Vec::new(),
            dispatcher: None,
            nats,
            redis,
            nats_url,
            redis_url,
            spec: Spec {
                models,
                dispatcher_args: self.dispatcher_args,
                worker_args: self.worker_args,
                envs: self.envs,
            },
            next_worker: 0,
            log_dir,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let nats = stack.connect_nats().await?;
        if self.dispatcher {
            stack.start_dispatcher(Vec::<String>::new())?;
            let js = jetstream::new(nats.clone());
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            stack
                .watch(
                    "the dispatcher creates the stream",
                    wait_for_stream(&js, left),
                )
                .await?;
        }
        for _ in 0..self.workers {
            stack.start_worker(Vec::<String>::new())?;
        }
        if self.workers > 0 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            stack
                .watch(
                    "the workers start",
                    wait_for_workers(&nats, self.workers, left),
                )
                .await?;
        }
        Ok(stack)
    }
}

/// Starts the servers that are needed, both at once, off the async threads (starting
/// blocks while it polls).
async fn start_servers(
    nats: bool,
    redis: bool,
) -> Result<(Option<NatsServer>, Option<RedisServer>), LocalError> {
    let joined =
        |e: tokio::task::JoinError| LocalError::NotFound(format!("server start task failed: {e}"));
    let nats = tokio::task::spawn_blocking(move || nats.then(NatsServer::start).transpose());
    let redis = tokio::task::spawn_blocking(move || redis.then(RedisServer::start).transpose());
    let (nats, redis) = (nats.await.map_err(joined)?, redis.await.map_err(joined)?);
    Ok((nats?, redis?))
}

impl LocalStack {
    /// The NATS URL everything here uses.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The Redis URL everything here uses.
    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// The folder with every process's log (`dispatcher.log`, `worker-<i>.log`).
    pub fn log_dir(&self) -> &Path {
        self.log_dir.path()
    }

    /// The NATS server, if this stack started it.
    pub fn nats_server(&mut self) -> Option<&mut NatsServer> {
        self.nats.as_mut()
    }

    /// The Redis server, if this stack started it.
    pub fn redis_server(&mut self) -> Option<&mut RedisServer> {
        self.redis.as_mut()
    }

    /// The dispatcher, if one was started.
    pub fn dispatcher(&mut self) -> Option<&mut Process> {
        self.dispatcher.as_mut()
    }

    /// The workers, in start order (`worker-0` first), including ended ones.
    pub fn workers(&mut self) -> &mut [Process] {
        &mut self.workers
    }

    /// A worker by its id (`worker-<i>`).
    pub fn worker(&mut self, id: &str) -> Option<&mut Process> {
        self.workers.iter_mut().find(|w| w.name() == id)
    }

    /// Starts (or replaces, killing the old one) the dispatcher with the stack's arguments
    /// plus `extra_args`. Does not wait for it; see [`wait_for_stream`].
    pub fn start_dispatcher(
        &mut self,
        extra_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<&mut Process, LocalError> {
        if let Some(mut old) = self.dispatcher.take() {
            old.kill();
        }
        let mut args = vec![
            "--nats-url".to_string(),
            self.nats_url.clone(),
            "--redis-url".into(),
            self.redis_url.clone(),
        ];
        args.extend(self.spec.dispatcher_args.iter().cloned());
        args.extend(extra_args.into_iter().map(Into::into));
        let log = self.log_dir.path().join("dispatcher.log");
        let process = Process::start(
            "dispatcher",
            binary("jetinfer-dispatcher")?,
            &args,
            self.spec.envs.clone(),
            log,
        )?;
        Ok(self.dispatcher.insert(process))
    }

    /// Starts one more worker, `worker-<next>`, with the stack's arguments plus
    /// `extra_args`. Does not wait for it; see [`wait_for_workers`].
    pub fn start_worker(
        &mut self,
        extra_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<&mut Process, LocalError> {
        let id = format!("worker-{}", self.next_worker);
        self.next_worker += 1;
        let mut args = vec![
            "--nats-url".to_string(),
            self.nats_url.clone(),
            "--redis-url".into(),
            self.redis_url.clone(),
            "--models".into(),
            self.spec.models.display().to_string(),
            "--id".into(),
            id.clone(),
        ];
        args.extend(self.spec.worker_args.iter().cloned());
        args.extend(extra_args.into_iter().map(Into::into));
        let log = self.log_dir.path().join(format!("{id}.log"));
        let process = Process::start(
            id,
            binary("jetinfer-worker")?,
            &args,
            self.spec.envs.clone(),
            log,
        )?;
        self.workers.push(process);
        Ok(self.workers.last_mut().expect("just pushed: this is a bug"))
    }

    /// A new core NATS connection to the stack.
    pub async fn connect_nats(&self) -> Result<async_nats::Client, LocalError> {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.nats_url)
            .await
            .map_err(|e| LocalError::Nats(format!("cannot connect to {}: {e}", self.nats_url)))
    }

    /// A [`Client`] for the stack, with the default key prefix.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(&self.nats_url, &StoreConfig::new(&self.redis_url)).await
    }

    /// An error naming the first started process that has ended, with its log.
    pub fn check_alive(&mut self, during: &str) -> Result<(), LocalError> {
        for p in self.dispatcher.iter_mut().chain(self.workers.iter_mut()) {
            p.check_running(during)?;
        }
        Ok(())
    }

    /// The last `lines` lines of every process's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in self.dispatcher.iter().chain(&self.workers) {
            out.push_str(&format!(
                "==> {} ({}) <==\n{}\n",
                p.name(),
                p.log_path().display(),
                p.log_tail(lines)
            ));
        }
        out
    }

    /// Graceful shutdown: workers and the dispatcher get SIGTERM and up to 10 s each
    /// (in parallel) before SIGKILL, then the servers this stack started are stopped.
    pub fn stop(&mut self) {
        for p in self.workers.iter_mut().chain(self.dispatcher.iter_mut()) {
            p.resume();
            p.terminate();
        }
        for p in self.workers.iter_mut().chain(self.dispatcher.iter_mut()) {
            if p.wait_exit(STOP_GRACE).is_none() {
                tracing::warn!(
                    name = p.name(),
                    "did not stop within {STOP_GRACE:?}; killing it"
                );
                p.kill();
            }
        }
        if let Some(n) = self.nats.as_mut() {
            n.stop();
        }
        if let Some(r) = self.redis.as_mut() {
            r.stop();
        }
    }

    /// Runs `until`, failing early if a started process ends meanwhile.
    async fn watch<T>(
        &mut self,
        during: &str,
        until: impl Future<Output = Result<T, LocalError>>,
    ) -> Result<T, LocalError> {
        let mut until = std::pin::pin!(until);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                biased;
                // A timeout is easier to understand with what the processes said.
                result = &mut until => return result.map_err(|e| match e {
                    LocalError::Timeout { what, timeout, detail } => {
                        LocalError::Timeout { what, timeout, detail: format!("{detail}\n{}", self.log_tails(20)) }
                    }
                    other => other,
                }),
                _ = tick.tick() => self.check_alive(&format!("waiting until {during}"))?,
            }
        }
    }
}

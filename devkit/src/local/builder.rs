//! [`LocalStackBuilder`]: what a [`LocalStack`] starts with, and starting it.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;

use super::paths::{binary, repo_root};
use super::spec::{LogDir, ProcessUrls, Spec};
use super::stack::LocalStack;
use super::wait::{wait_for_stream, wait_for_workers};
use super::{LocalError, NatsServer, RedisServer};

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
    dispatcher_urls: Option<ProcessUrls>,
    log_dir: Option<PathBuf>,
    timeout: Duration,
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
            dispatcher_urls: None,
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

    /// The dispatcher connects with these URLs instead of the stack's (e.g. with the
    /// credentials of its own role); the stack's URLs stay for everything else.
    pub fn dispatcher_urls(mut self, nats: impl Into<String>, redis: impl Into<String>) -> Self {
        self.dispatcher_urls = Some(ProcessUrls::new(nats, redis));
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
        let models = self.check_prerequisites()?;
        let log_dir = open_log_dir(self.log_dir)?;
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
                dispatcher_urls: self.dispatcher_urls,
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

    /// The model file, once it and the binaries to start are known to exist: a missing
    /// build or export fails before anything starts.
    fn check_prerequisites(&self) -> Result<PathBuf, LocalError> {
        let models = match &self.models {
            Some(m) => m.clone(),
            None => repo_root()?.join("models/out/models.toml"),
        };
        if self.workers > 0 && !models.is_file() {
            return Err(LocalError::NotFound(format!(
                "model file {} not found: run models/export.py first",
                models.display()
            )));
        }
        if self.dispatcher {
            binary("jetinfer-dispatcher")?;
        }
        if self.workers > 0 {
            binary("jetinfer-worker")?;
        }
        Ok(models)
    }
}

/// The given log folder (created if needed), or a temporary one.
fn open_log_dir(dir: Option<PathBuf>) -> Result<LogDir, LocalError> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(LocalError::io(format!("cannot create {}", dir.display())))?;
            Ok(LogDir::Kept(dir))
        }
        None => Ok(LogDir::Temp(
            tempfile::Builder::new()
                .prefix("jetinfer-logs-")
                .tempdir()
                .map_err(LocalError::io("cannot create a log folder"))?,
        )),
    }
}

/// Starts the servers that are needed, both at once, off the async threads (starting
/// blocks while it polls).
async fn start_servers(
    nats: bool,
    redis: bool,
) -> Result<(Option<NatsServer>, Option<RedisServer>), LocalError> {
    let nats = tokio::task::spawn_blocking(move || nats.then(NatsServer::start).transpose());
    let redis = tokio::task::spawn_blocking(move || redis.then(RedisServer::start).transpose());
    let (nats, redis) = (nats.await?, redis.await?);
    Ok((nats?, redis?))
}

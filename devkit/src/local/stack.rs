//! [`LocalStack`]: NATS, Redis, a dispatcher and N workers on this machine, ready to serve.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use super::paths::binary;
use super::process::Process;
use super::spec::{LogDir, ProcessUrls, Spec};
use super::{LocalError, NatsServer, RedisServer};
use jetinfer_client::{Client, ClientError, StoreConfig};
use jetinfer_connect::NatsSettings;

/// How long processes get to exit after SIGTERM in [`LocalStack::stop`].
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running local deployment. Dropping it kills everything it started (SIGKILL);
/// [`LocalStack::stop`] shuts down gracefully.
#[derive(Debug)]
pub struct LocalStack {
    // Field order is drop order: workers, then the dispatcher, then the servers.
    pub(super) workers: Vec<Process>,
    pub(super) dispatcher: Option<Process>,
    pub(super) nats: Option<NatsServer>,
    pub(super) redis: Option<RedisServer>,
    pub(super) nats_url: String,
    pub(super) redis_url: String,
    pub(super) spec: Spec,
    pub(super) next_worker: usize,
    pub(super) log_dir: LogDir,
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
        let urls = self
            .spec
            .dispatcher_urls
            .clone()
            .unwrap_or_else(|| ProcessUrls::new(&self.nats_url, &self.redis_url));
        let mut args = vec![
            "--nats-url".to_string(),
            urls.nats,
            "--redis-url".into(),
            urls.redis,
        ];
        args.extend(self.spec.dispatcher_args.iter().cloned());
        args.extend(extra_args.into_iter().map(Into::into));
        let log = self.log_dir.path().join("dispatcher.log");
        let process = Process::start(
            "dispatcher",
            binary("jetinfer-dispatcher")?,
            &args,
            local_dispatcher_env(&self.spec.envs),
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
        let urls = ProcessUrls::new(&self.nats_url, &self.redis_url);
        self.start_worker_with_urls(urls, extra_args)
    }

    /// The id the next [`LocalStack::start_worker`] gives its worker (`worker-<next>`).
    pub fn next_worker_id(&self) -> String {
        format!("worker-{}", self.next_worker)
    }

    /// Like [`LocalStack::start_worker`], but the worker connects with `urls` (e.g. with the
    /// credentials of [`LocalStack::next_worker_id`]'s own NATS user) instead of the stack's.
    pub fn start_worker_with_urls(
        &mut self,
        urls: ProcessUrls,
        extra_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<&mut Process, LocalError> {
        let id = self.next_worker_id();
        self.next_worker += 1;
        let mut args = vec![
            "--nats-url".to_string(),
            urls.nats,
            "--redis-url".into(),
            urls.redis,
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
        Ok(NatsSettings::new(&self.nats_url).connect().await?)
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
    pub(super) async fn watch<T>(
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

/// Byte limit of each jobs stream a local stack's dispatcher creates, unless the caller or
/// the environment sets `JETINFER_STREAM_MAX_BYTES` (or passes `--stream-max-bytes`).
/// nats-server reserves a stream's `max_bytes` against its file store, which defaults to
/// three quarters of the free disk: the production default (8 GiB, three priority streams)
/// is refused on a machine with less than ~32 GB free, and tests run several servers at
/// once. 1 GiB holds what the tests, the demo and the bench queue (250,000 2 KB jobs).
const LOCAL_STREAM_MAX_BYTES: &str = "1073741824";

fn local_dispatcher_env(envs: &[(String, String)]) -> Vec<(String, String)> {
    let mut envs = envs.to_vec();
    let key = "JETINFER_STREAM_MAX_BYTES";
    if !envs.iter().any(|(k, _)| k == key) && std::env::var_os(key).is_none() {
        envs.push((key.to_string(), LOCAL_STREAM_MAX_BYTES.to_string()));
    }
    envs
}

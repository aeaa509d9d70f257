//! [`RedisServer`]: a private redis-server on a Unix socket (no TCP port to race for),
//! with persistence off.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::paths::redis_server_program;
use super::process::Process;
use super::LocalError;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A redis-server process listening on `<tempdir>/r.sock`. Killed on drop, and its folder
/// removed after.
#[derive(Debug)]
pub struct RedisServer {
    // Field order is drop order: the process goes before its folder.
    process: Process,
    program: PathBuf,
    dir: tempfile::TempDir,
    /// AOF on (`appendfsync always`): a restart keeps every acknowledged write.
    persistent: bool,
    /// Arguments added to every start (e.g. `--aclfile <file>`), kept for restarts.
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server with `--port 0 --unixsocket <dir>/r.sock --save '' --appendonly no`
    /// and returns once it answers PING. `JETINFER_REDIS_ARGS` (whitespace-separated) adds
    /// arguments, e.g. `--io-threads 4 --io-threads-do-reads yes` on a many-core benchmark host.
    pub fn start() -> Result<RedisServer, LocalError> {
        Self::start_with(false)
    }

    /// Like [`RedisServer::start`] but with the append-only file on and fsynced on every
    /// write, so [`RedisServer::restart`] (even after [`RedisServer::kill`]) keeps the data.
    pub fn start_persistent() -> Result<RedisServer, LocalError> {
        Self::start_with(true)
    }

    /// Like [`RedisServer::start`], with more arguments, e.g. `--aclfile <file>` for ACL
    /// users (the server then counts as up once it answers PING with `NOAUTH`).
    pub fn start_with_args(
        extra_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<RedisServer, LocalError> {
        Self::start_with_extra(false, extra_args.into_iter().map(Into::into).collect())
    }

    fn start_with(persistent: bool) -> Result<RedisServer, LocalError> {
        Self::start_with_extra(persistent, Vec::new())
    }

    fn start_with_extra(
        persistent: bool,
        extra_args: Vec<String>,
    ) -> Result<RedisServer, LocalError> {
        let program = redis_server_program()?;
        // A short prefix: Unix socket paths are limited to about 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("jetinfer-redis-")
            .tempdir()
            .map_err(LocalError::io("cannot create a folder for redis-server"))?;
        let process = launch(&program, dir.path(), persistent, &extra_args)?;
        Ok(RedisServer {
            process,
            program,
            dir,
            persistent,
            extra_args,
        })
    }

    /// `redis+unix://<dir>/r.sock`, accepted by `redis` and `deadpool_redis::Config::from_url`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// The Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("r.sock")
    }

    /// The pid of the current (or last) server process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Graceful shutdown (SIGTERM, SIGKILL after 10 s).
    pub fn stop(&mut self) {
        self.process.stop_within(Duration::from_secs(10));
    }

    /// Stops the server if it runs and starts a new one on the same socket. Without
    /// persistence the data is gone, as after a failover to an empty replica; a persistent
    /// server reloads its append-only file.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.stop();
        self.process = launch(
            &self.program,
            self.dir.path(),
            self.persistent,
            &self.extra_args,
        )?;
        Ok(())
    }

    /// SIGSTOP: the server stops answering but keeps its connections (an outage clients
    /// can only detect by timeouts).
    pub fn pause(&mut self) {
        self.process.pause();
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&mut self) {
        self.process.resume();
    }

    /// The folder holding the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn launch(
    program: &Path,
    dir: &Path,
    persistent: bool,
    extra_args: &[String],
) -> Result<Process, LocalError> {
    let socket = dir.join("r.sock");
    let _ = std::fs::remove_file(&socket);
    let socket_arg = socket.display().to_string();
    let dir_arg = dir.display().to_string();
    let extra = std::env::var("JETINFER_REDIS_ARGS").unwrap_or_default();
    let args = [
        "--port",
        "0",
        "--unixsocket",
        &socket_arg,
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        if persistent { "yes" } else { "no" },
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ];
    let mut process = Process::start(
        "redis-server",
        program,
        args.into_iter()
            .chain(extra.split_whitespace())
            .chain(extra_args.iter().map(String::as_str)),
        std::iter::empty::<(&str, &str)>(),
        dir.join("redis.log"),
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers_ping(&socket) {
        process.check_running("starting")?;
        if Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: "redis-server answering PING".into(),
                timeout: START_TIMEOUT,
                detail: format!("; log:\n{}", process.log_tail(20)),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::debug!(socket = %socket.display(), pid = process.pid(), "redis-server ready");
    Ok(process)
}

/// Sends an inline PING and expects `+PONG`, or `-NOAUTH` from a server whose default user
/// is off (ACL users only); false on any failure (not up yet).
fn answers_ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}

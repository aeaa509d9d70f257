//! [`Process`]: a child process whose output goes to a log file, with the signals fault
//! tests need. Killed (SIGKILL) and reaped on drop.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::LocalError;

/// How often exit is polled while waiting for one.
const POLL: Duration = Duration::from_millis(10);

/// A running (or ended) child process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Set once the child was reaped; its pid must not be signalled after that, since the
    /// kernel may have given the number to another process.
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `program` with `args` and extra environment variables (on top of this
    /// process's own); stdout and stderr are appended to `log_path`.
    pub fn start<A, K, V>(
        name: impl Into<String>,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = A>,
        envs: impl IntoIterator<Item = (K, V)>,
        log_path: impl Into<PathBuf>,
    ) -> Result<Process, LocalError>
    where
        A: AsRef<OsStr>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args).envs(envs);
        Process::spawn(name, command, log_path)
    }

    /// Starts a prepared command; its stdin is closed and stdout/stderr go to `log_path`.
    pub fn spawn(
        name: impl Into<String>,
        mut command: Command,
        log_path: impl Into<PathBuf>,
    ) -> Result<Process, LocalError> {
        let name = name.into();
        let log_path = log_path.into();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(LocalError::io(format!(
                "cannot open log {}",
                log_path.display()
            )))?;
        let err = log
            .try_clone()
            .map_err(LocalError::io("cannot share the log file"))?;
        command.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = command.spawn().map_err(|source| LocalError::Spawn {
            program: PathBuf::from(command.get_program()),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), log = %log_path.display(), "started process");
        Ok(Process {
            name,
            child,
            log_path,
            status: None,
        })
    }

    /// The name given at start (used in messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// True while the process has not ended.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// An error naming this process and quoting its log, if it has ended.
    pub fn check_running(&mut self, during: &str) -> Result<(), LocalError> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(LocalError::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                during: during.to_string(),
                log_tail: self.log_tail(40),
            }),
        }
    }

    /// SIGKILL, then reap. Does nothing if the process already ended.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// SIGTERM: asks for a graceful shutdown; see [`Process::wait_exit`].
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGSTOP: freezes the process (it keeps its sockets but answers nothing), e.g. to
    /// simulate a hung worker.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: resumes a paused process.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    /// Sends a signal, unless the process has already ended.
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        }
    }

    /// Graceful stop: SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        // A paused process would not act on SIGTERM until resumed.
        self.resume();
        self.terminate();
        if self.wait_exit(grace).is_none() {
            tracing::warn!(
                name = self.name,
                ?grace,
                "process ignored SIGTERM; killing it"
            );
            self.kill();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end, blocking this thread. From async code
    /// prefer [`Process::wait_exit_async`].
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the process to end without blocking the runtime.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, log: &Path) -> Process {
        Process::start(
            "sh",
            "/bin/sh",
            ["-c", script],
            [("GREETING", "hello")],
            log,
        )
        .unwrap()
    }

    #[test]
    fn logs_signals_and_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh(
            "echo $GREETING; echo oops >&2; trap 'echo bye; exit 3' TERM; while true; do sleep 0.05; done",
            &dir.path().join("a.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.log().contains("oops") && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(p.log().contains("hello\n"), "{}", p.log());
        assert!(p.is_running());
        p.pause();
        p.resume();
        let status = p.stop_within(Duration::from_secs(5)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(p.log_tail(1).contains("bye"));
        assert!(p
            .check_running("testing")
            .unwrap_err()
            .to_string()
            .contains("bye"));
        p.kill(); // no-op once ended
    }

    #[test]
    fn kill_and_drop_end_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("sleep 30", &dir.path().join("b.log"));
        assert_eq!(p.wait_exit(Duration::from_millis(50)), None);
        p.kill();
        assert!(!p.is_running());
        let p = sh("sleep 30", &dir.path().join("c.log"));
        let pid = p.pid() as libc::pid_t;
        drop(p);
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "dropped process is gone");
    }

    #[test]
    fn missing_programs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Process::start(
            "x",
            "/no/such/program",
            [""; 0],
            [("A", "B")],
            dir.path().join("x.log"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/program"), "{err}");
    }
}

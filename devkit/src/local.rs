//! Real servers and processes on this machine, for the demo and for black-box tests.
//!
//! - [`NatsServer`]: a nats-server with JetStream on a free port and a private store folder;
//!   it can be killed and restarted on the same port with the same store.
//! - [`RedisServer`]: a redis-server on a private Unix socket, no persistence.
//! - [`Process`]: any spawned program with its output in a log file; signals (kill,
//!   terminate, pause/resume) for fault tests; killed on drop.
//! - [`LocalStack`]: both servers (or given URLs), one `jetinfer-dispatcher` and N
//!   `jetinfer-worker`s, ready when the dispatcher made the jobs stream and every worker
//!   announced itself.
//! - [`binary`], [`repo_root`]: where the workspace binaries and the repository are.
//! - [`wait_for_stream`], [`wait_for_workers`]: readiness checks over NATS.
//!
//! Starting and stopping is synchronous (it spawns processes and polls sockets), so the
//! servers can be used from plain `#[test]`s; [`LocalStackBuilder::start`] is async because it
//! waits on NATS. Everything started here is killed when its handle is dropped, so a
//! failing test leaves no servers behind.

mod builder;
mod nats;
mod paths;
mod process;
mod redis;
mod spec;
mod stack;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use builder::LocalStackBuilder;
pub use nats::NatsServer;
pub use paths::{binary, repo_root, resolve_path};
pub use process::Process;
pub use redis::RedisServer;
pub use spec::ProcessUrls;
pub use stack::LocalStack;
pub use wait::{wait_for_stream, wait_for_workers};

/// What can go wrong starting or watching local processes.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A program or file is missing; the message says how to get it.
    #[error("{0}")]
    NotFound(String),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// A process ended while it was expected to run.
    #[error("{name} exited ({status}) while {during}; the end of its log:\n{log_tail}")]
    Exited {
        name: String,
        status: String,
        during: String,
        log_tail: String,
    },
    #[error("{what} did not happen within {timeout:?}{detail}")]
    Timeout {
        what: String,
        timeout: Duration,
        detail: String,
    },
    #[error(transparent)]
    NatsConnect(#[from] jetinfer_connect::ConnectError),
    #[error("nats: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("nats: heartbeat subscription ended")]
    SubscriptionEnded,
    #[error("server start task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl LocalError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
        let what = what.into();
        move |source| LocalError::Io { what, source }
    }
}

#[cfg(test)]
mod tests;

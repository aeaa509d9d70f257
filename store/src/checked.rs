//! The pool's check of a connection it hands out, paid only when it can find something.
//!
//! deadpool-redis checks every connection it takes from the pool with a round trip
//! (`UNWATCH` + `PING`; `ROLE` behind Sentinel) — for a multiplexed connection taken for
//! every pipeline, that doubled the store's round trips per job path step and cost a
//! wake-up of its own each time (docs/benchmarks.md, "Per-job work"). [`Checked`] wraps a
//! manager and, for the services (`StoreConfig::check_busy_connections = false`), skips
//! that check for a connection that was in use moments ago and whose commands have all
//! succeeded: it is demonstrably alive and (behind Sentinel) talking to a primary, since a
//! write to a demoted primary fails with `READONLY`. The price: the first command after a
//! restart or failover fails (and the caller tries again later) where the check would
//! have reconnected first. A connection on which any command failed (refused, timed out,
//! connection lost, `READONLY`) is discarded instead of reused, so the next one is new;
//! one idle for longer than [`RECHECK_AFTER_IDLE`] is checked as before.

use std::time::Duration;

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{self, RedisError};

/// A connection not used for this long is checked with the inner manager's round trip
/// before it is handed out again.
pub(crate) const RECHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A manager of [`CheckedConnection`]s around `manager`, which opens and checks them.
pub(crate) struct Checked<M> {
    pub manager: M,
    /// Check busy connections too (`StoreConfig::check_busy_connections`).
    pub check_busy: bool,
}

/// A connection that remembers whether any of its commands failed.
pub(crate) struct CheckedConnection {
    conn: MultiplexedConnection,
    failed: bool,
}

impl<M> Manager for Checked<M>
where
    M: Manager<Type = MultiplexedConnection, Error = RedisError> + Sync,
{
    type Type = CheckedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<CheckedConnection, RedisError> {
        Ok(CheckedConnection {
            // Boxed, as is the inner check below: opening a connection (TLS, Sentinel) is a
            // future of ~10 KB, and inline it would make every checkout's future — and every
            // task that awaits a store call — that large, copied whole each time such a
            // task is spawned (docs/benchmarks.md, "Future sizes and held jobs"). Both run rarely.
            conn: Box::pin(self.manager.create()).await?,
            failed: false,
        })
    }

    async fn recycle(
        &self,
        c: &mut CheckedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if c.failed {
            return Err(RecycleError::message(
                "a command failed on this connection: opening a new one",
            ));
        }
        if !self.check_busy && metrics.last_used() < RECHECK_AFTER_IDLE {
            return Ok(());
        }
        Box::pin(self.manager.recycle(&mut c.conn, metrics)).await
    }
}

/// A server's error reply: pipelines return them among the values (`READONLY` from a
/// demoted primary among them), so they count as failures here too.
fn is_error(reply: &redis::Value) -> bool {
    matches!(reply, redis::Value::ServerError(_))
}

impl ConnectionLike for CheckedConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let reply = self.conn.req_packed_command(cmd).await;
            self.failed |= reply.as_ref().map_or(true, is_error);
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let replies = self.conn.req_packed_commands(cmd, offset, count).await;
            self.failed |= replies.as_ref().map_or(true, |r| r.iter().any(is_error));
            replies
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

#[cfg(test)]
mod tests {
    use crate::{ResultStore, StoreConfig};

    /// Every store call awaits a checkout; with the connection's opening inline, each such
    /// future (and every task awaiting one) was ~10 KB, copied whole whenever such a task
    /// was spawned. Boxed (see `create`), they are ~1 KB.
    #[tokio::test]
    async fn store_call_futures_stay_small() {
        let store = ResultStore::new(&StoreConfig::new("redis://127.0.0.1:1")).unwrap();
        let ids = ["a", "b"];
        let sizes = [
            ("ping", std::mem::size_of_val(&store.ping())),
            ("job_states", std::mem::size_of_val(&store.job_states(&ids))),
            (
                "exists_many",
                std::mem::size_of_val(&store.exists_many(&ids)),
            ),
        ];
        for (call, size) in sizes {
            assert!(size < 4096, "{call}'s future is {size} bytes");
        }
    }
}

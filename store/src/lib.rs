//! The Redis contract of jetinfer: results (`SET NX`, first result wins), the
//! content-addressed cache and the lost-run counts. The client library reads results through
//! it, the dispatcher and the workers write through it, so every process agrees on keys,
//! TTLs and encoding: [`ResultStore`] and its configuration [`StoreConfig`] here; how the
//! connections are made (`rediss://` with [`RedisTls`], the startup check) in `connection.rs`;
//! a primary found through Sentinel (`redis+sentinel://`, [`SentinelUrl`]) in `sentinel.rs`;
//! the pool's connection check in `checked.rs`; the lookups of which jobs have a result in
//! `lookups.rs`; the results' writes in `write.rs`.

mod checked;
mod connection;
mod inputs;
mod lookups;
mod sentinel;
mod write;

use std::time::Duration;

use connection::RedisPool;
use deadpool_redis::redis::{self, AsyncCommands};
use jetinfer_schemas::{JobResult, Keys};

pub use connection::RedisTls;
pub use inputs::{InputStores, StoredValue};
pub use sentinel::{is_sentinel_url, SentinelUrl, SentinelUrlError};

/// Failure to reach or use Redis. Always transient from a job's point of view.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis config: {0}")]
    Config(#[from] deadpool_redis::CreatePoolError),
    #[error("redis TLS: cannot use the {what} file {}: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("redis TLS: {0}")]
    TlsConfig(String),
    #[error("redis Sentinel URL: {0}")]
    SentinelUrl(#[from] SentinelUrlError),
    /// `WAIT` found fewer replicas holding the writes than asked for within its timeout:
    /// the results are on the primary only and could be lost at a failover, so they do
    /// not count as stored (the jobs run again; `SET NX` keeps the first result).
    #[error("results reached {acked} of the {wanted} replicas asked for (WAIT {wanted} {timeout_ms} ms)")]
    NotReplicated {
        acked: u32,
        wanted: u32,
        timeout_ms: u64,
    },
    /// Redis answered but does not accept this configuration (certificate, password,
    /// scheme): retrying cannot help. See [`ResultStore::check`].
    #[error("Redis at {url} refused the connection: {reason}")]
    Refused { url: String, reason: String },
    /// Nothing answered at the address (yet). See [`ResultStore::check`].
    #[error("Redis at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("stored result of {id} does not decode: {source}")]
    Decode {
        id: String,
        source: rmp_serde::decode::Error,
    },
}

/// TTLs and key prefix of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    /// CA and client certificate for a `rediss://` URL (none: the system's trust store).
    pub tls: RedisTls,
    pub keys: Keys,
    pub result_ttl: Duration,
    pub cache_ttl: Duration,
    /// Pool size; each connection is multiplexed, so a few suffice.
    pub pool_size: usize,
    /// Results count as stored only once this many replicas hold them (`WAIT`); 0: as
    /// soon as the primary has them (asynchronous replication).
    pub wait_replicas: u32,
    /// How long `WAIT` waits for [`StoreConfig::wait_replicas`].
    pub wait_timeout: Duration,
    /// Check every connection taken from the pool with a round trip (`PING`; `ROLE` behind
    /// Sentinel), the default. `false`: only a connection idle for a second or on which a
    /// command failed (see `checked.rs`), so the first command after a Redis restart or
    /// failover may fail where the check would have reconnected first — for callers that
    /// handle every store error by trying again later (the dispatcher and the worker),
    /// which saves a round trip per pipeline.
    pub check_busy_connections: bool,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            tls: RedisTls::default(),
            keys: Keys::default(),
            result_ttl: Duration::from_secs(24 * 3600),
            cache_ttl: Duration::from_secs(3600),
            pool_size: 8,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            check_busy_connections: true,
        }
    }
}

/// One result to write: the job id and its encoded [`JobResult`].
pub struct ResultWrite<'a> {
    pub id: &'a str,
    pub bytes: Vec<u8>,
    /// The job's inputs were sent by reference: delete them once the result is stored.
    pub drop_inputs: bool,
}

/// Handle to the result store; cheap to clone.
#[derive(Clone)]
pub struct ResultStore {
    pool: RedisPool,
    url: String,
    tls: RedisTls,
    keys: Keys,
    result_ttl_ms: u64,
    cache_ttl_ms: u64,
    /// `WAIT <replicas> <ms>` after each results pipeline (None: off).
    wait: Option<(u32, u64)>,
}

impl ResultStore {
    /// Creates the pool; connections are opened lazily, with explicit timeouts (redis'
    /// defaults of 500 ms are too short for a loaded machine). The TLS files are read
    /// here, so a missing or unreadable one fails now; see [`ResultStore::check`] for
    /// what only a connection shows.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let pool_config = deadpool_redis::PoolConfig {
            max_size: config.pool_size,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(Duration::from_secs(5)),
                create: Some(Duration::from_secs(5)),
                recycle: Some(Duration::from_secs(5)),
            },
            ..Default::default()
        };
        // A WAIT blocks up to its timeout; the redis crate's 500 ms per command would cut
        // it short (and report a timeout rather than the replicas it counted).
        let response_timeout = (config.wait_replicas > 0)
            .then(|| config.wait_timeout.max(Duration::from_millis(500)) + Duration::from_secs(1));
        let pool = connection::pool(
            &config.url,
            &config.tls,
            config.check_busy_connections,
            pool_config,
            response_timeout,
        )?;
        Ok(ResultStore {
            pool,
            url: config.url.clone(),
            tls: config.tls.clone(),
            keys: config.keys.clone(),
            result_ttl_ms: config.result_ttl.as_millis() as u64,
            cache_ttl_ms: config.cache_ttl.as_millis() as u64,
            // WAIT 0 ms would block forever: at least 1 ms.
            wait: (config.wait_replicas > 0).then(|| {
                (
                    config.wait_replicas,
                    (config.wait_timeout.as_millis() as u64).max(1),
                )
            }),
        })
    }

    /// Opens a connection now and PINGs, for processes to call once at startup.
    /// [`StoreError::Refused`] (Redis answered but rejects the TLS certificates, the
    /// password, or a plain `redis://` on its TLS port) names what failed and should stop
    /// the process; [`StoreError::Unreachable`] means nothing answered yet.
    pub async fn check(&self) -> Result<(), StoreError> {
        connection::check(&self.pool, &self.url, &self.tls).await
    }

    /// [`ResultStore::new`] and [`ResultStore::check`], for processes at startup: fails
    /// when Redis refuses this configuration, but not when Redis is merely unreachable
    /// (the pool keeps trying, as with `new` alone).
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let store = Self::new(config)?;
        match store.check().await {
            Err(e @ StoreError::Refused { .. }) => Err(e),
            Ok(()) | Err(_) => Ok(store),
        }
    }

    /// The key names in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Round trip to Redis: is it reachable?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether Redis answers a PING within 2 s, and a word for health bodies.
    pub async fn health(&self) -> (bool, String) {
        match tokio::time::timeout(Duration::from_secs(2), self.ping()).await {
            Ok(Ok(())) => (true, "ok".to_string()),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, "no answer within 2 s".to_string()),
        }
    }

    /// The raw stored result of a job, if any.
    pub async fn get_raw(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(conn.get(self.keys.result(id)).await?)
    }

    /// The decoded result of a job, if it is finished.
    pub async fn get(&self, id: &str) -> Result<Option<JobResult<'static>>, StoreError> {
        self.get_raw(id)
            .await?
            .map(|b| decode_owned(id, &b))
            .transpose()
    }

    /// Results of many jobs in one round trip (`MGET`), in the order of `ids`.
    pub async fn get_many(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<JobResult<'static>>>, StoreError> {
        let raw = self.get_many_raw(ids).await?;
        raw.into_iter()
            .zip(ids)
            .map(|(b, id)| b.map(|b| decode_owned(id, &b)).transpose())
            .collect()
    }

    /// Raw stored results of many jobs in one round trip (`MGET`), in the order of `ids`;
    /// lets a caller decode each on its own, so one bad value does not hide the others.
    pub async fn get_many_raw(&self, ids: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.result(id)).collect();
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?)
    }

    /// Stores the inputs of a job sent by reference (`SET PX`; see
    /// [`jetinfer_schemas::inputs_ref`]). Call before publishing the job.
    pub async fn put_inputs(
        &self,
        id: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let () = redis::cmd("SET")
            .arg(self.keys.input(id))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The inputs of jobs sent by reference, in one round trip (`MGET`), in the order of
    /// `ids`; `None` where they expired or were never stored.
    pub async fn get_inputs(&self, ids: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.input(id)).collect();
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?)
    }

    /// Deletes the inputs of jobs sent by reference (`UNLINK`: the values are freed on
    /// Redis's background thread).
    pub async fn unlink_inputs(&self, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.input(id)).collect();
        let mut conn = self.pool.get().await?;
        let _: u64 = redis::cmd("UNLINK")
            .arg(&keys)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Counts one lost run for each job (a worker died, timed out or could not run it) and
    /// returns the new counts. The counters expire with the results.
    pub async fn add_failures(&self, ids: &[&str]) -> Result<Vec<u32>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.incr(self.keys.failures(id), 1)
                .cmd("PEXPIRE")
                .arg(self.keys.failures(id))
                .arg(self.result_ttl_ms)
                .ignore();
        }
        let mut conn = self.pool.get().await?;
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Removes a job's result and failure count, so that publishing it again runs it
    /// (dead-letter replay).
    pub async fn forget(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: u32 = conn
            .del(&[self.keys.result(id), self.keys.failures(id)])
            .await?;
        Ok(())
    }

    /// Adds one forward run to each job's count in `<prefix>:executions` (fault suite only).
    pub async fn record_executions(&self, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HINCRBY")
                .arg(self.keys.executions())
                .arg(*id)
                .arg(1)
                .ignore();
        }
        let mut conn = self.pool.get().await?;
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Forward runs per job recorded by workers with `--record-executions`.
    pub async fn executions(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(conn.hgetall(self.keys.executions()).await?)
    }

    /// Cache entries for these keys (`MGET`), in order.
    pub async fn get_cached(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await?;
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut conn).await?)
    }
}

/// The scheme and address of a Redis URL, for messages: never its user or password.
fn redact(url: &str) -> String {
    use redis::IntoConnectionInfo;
    if is_sentinel_url(url) {
        return SentinelUrl::parse(url).map_or_else(
            |_| format!("{}<unparsable address>", sentinel::SCHEME),
            |u| u.redacted(),
        );
    }
    let scheme = url.split_once("://").map_or("redis", |(s, _)| s);
    match url.into_connection_info() {
        Ok(info) => format!("{scheme}://{}", info.addr()),
        Err(_) => format!("{scheme}://<unparsable address>"),
    }
}

/// Decodes a stored result into an owned value (as [`ResultStore::get`] does).
pub fn decode_owned(id: &str, bytes: &[u8]) -> Result<JobResult<'static>, StoreError> {
    rmp_serde::from_slice::<JobResult<'_>>(bytes)
        .map(JobResult::into_owned)
        .map_err(|source| StoreError::Decode {
            id: id.to_string(),
            source,
        })
}

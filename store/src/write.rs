//! Writing results: [`ResultStore::put_results`], one pipeline of `SET NX` per result (the
//! first result wins) and the cache entries, optionally ending with `WAIT` so that a result
//! counts as stored only once replicas hold it (see docs/reliability.md, Redis failover).

use deadpool_redis::redis;

use crate::{ResultStore, ResultWrite, StoreError};

impl ResultStore {
    /// Writes results with `SET NX PX` (the first result wins, a late or duplicate run
    /// never overwrites it) and cache entries with `SET PX`, all in one pipeline.
    /// Returns, per result, whether this write stored it (false: one was there already).
    ///
    /// With `wait_replicas` set, the pipeline ends with `WAIT`, and fewer replicas than
    /// asked is [`StoreError::NotReplicated`]. Each result key also gets a `PEXPIRE` after
    /// its `SET NX`: when the result was already there (a re-run after an earlier
    /// `NotReplicated`), `SET NX` writes nothing, and `WAIT` only covers this connection's
    /// own writes; the `PEXPIRE` is a write, so `WAIT` then covers the earlier `SET` too.
    /// A write refused with `READONLY` (a connection to a primary demoted by a failover) is
    /// tried once more on a fresh connection.
    pub async fn put_results(
        &self,
        results: &[ResultWrite<'_>],
        cache: &[(String, Vec<u8>)],
    ) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() && cache.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for r in results {
            let key = self.keys.result(r.id);
            pipe.cmd("SET")
                .arg(&key)
                .arg(&r.bytes)
                .arg("NX")
                .arg("PX")
                .arg(self.result_ttl_ms);
            if self.wait.is_some() {
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(self.result_ttl_ms)
                    .ignore();
            }
            if r.drop_inputs {
                // After the SET in the same pipeline: the inputs go only once a result
                // (this one or an earlier run's) is stored. UNLINK frees the ~150 KB value
                // on Redis's background thread, not its one command thread.
                pipe.cmd("UNLINK").arg(self.keys.input(r.id)).ignore();
            }
        }
        for (key, bytes) in cache {
            pipe.cmd("SET")
                .arg(key)
                .arg(bytes)
                .arg("PX")
                .arg(self.cache_ttl_ms)
                .ignore();
        }
        if let Some((replicas, ms)) = self.wait {
            pipe.cmd("WAIT").arg(replicas).arg(ms);
        }
        let replies: Vec<redis::Value> = match self.query(&pipe).await {
            Err(StoreError::Redis(e)) if e.code() == Some("READONLY") => {
                tracing::info!(
                    "Redis answered READONLY (a failover); writing again on a new connection"
                );
                self.query(&pipe).await?
            }
            other => other?,
        };
        let (sets, wait) = replies.split_at(results.len().min(replies.len()));
        if let Some((wanted, timeout_ms)) = self.wait {
            let acked: u32 = wait
                .first()
                .map(redis::from_redis_value_ref)
                .transpose()
                .map_err(redis::RedisError::from)?
                .unwrap_or(0);
            if acked < wanted {
                return Err(StoreError::NotReplicated {
                    acked,
                    wanted,
                    timeout_ms,
                });
            }
        }
        Ok(sets
            .iter()
            .map(|v| !matches!(v, redis::Value::Nil))
            .collect())
    }

    /// One pipeline on a pooled connection.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(pipe.query_async(&mut conn).await?)
    }
}

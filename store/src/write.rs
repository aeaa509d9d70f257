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
    /// With `wait_replicas` set, the pipeline ends with `WAIT` (see
    /// [`ResultStore::cover_with_wait`]), and fewer replicas than asked is
    /// [`StoreError::NotReplicated`]. A write refused with `READONLY` (a connection to a primary demoted by a failover) is
    /// tried once more on a fresh connection.
    pub async fn put_results(
        &self,
        results: &[ResultWrite<'_>],
        cache: &[(String, Vec<u8>)],
    ) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() && cache.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::Pipeline::with_capacity(results.len() + cache.len() + 1);
        for r in results {
            let key = self.keys.result(r.id);
            // Sized up front: the value would otherwise grow the command's buffer by
            // doublings (a few % of a worker's CPU per small job).
            let mut set = redis::Cmd::with_capacity(6, key.len() + r.bytes.len() + 32);
            set.arg("SET")
                .arg(&key)
                .arg(&r.bytes)
                .arg("NX")
                .arg("PX")
                .arg(self.result_ttl_ms);
            pipe.add_command(set);
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
        self.cover_with_wait(&mut pipe, results.iter().map(|r| r.id));
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
        self.check_wait(wait.first())?;
        Ok(sets
            .iter()
            .map(|v| !matches!(v, redis::Value::Nil))
            .collect())
    }

    /// One pipeline on a pooled connection.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// With `wait_replicas` set, appends to `pipe` a `PEXPIRE` of each job's result key
    /// (with the result TTL) and `WAIT`, whose reply [`ResultStore::check_wait`] reads.
    /// `WAIT` only covers writes made on its own connection, and a result found already
    /// there (a re-run, or a lookup before acking, after an earlier `NotReplicated`) was
    /// written on another; the `PEXPIRE` of an existing key is a write, so the `WAIT` after
    /// it covers that earlier `SET` too. Nothing without `wait_replicas`.
    pub(crate) fn cover_with_wait<'a>(
        &self,
        pipe: &mut redis::Pipeline,
        ids: impl Iterator<Item = &'a str>,
    ) {
        let Some((replicas, ms)) = self.wait else {
            return;
        };
        for id in ids {
            pipe.cmd("PEXPIRE")
                .arg(self.keys.result(id))
                .arg(self.result_ttl_ms)
                .ignore();
        }
        pipe.cmd("WAIT").arg(replicas).arg(ms);
    }

    /// `Ok` unless `wait_replicas` is set and `WAIT` (its reply, the pipeline's last)
    /// counted fewer replicas.
    pub(crate) fn check_wait(&self, reply: Option<&redis::Value>) -> Result<(), StoreError> {
        let Some((wanted, timeout_ms)) = self.wait else {
            return Ok(());
        };
        let acked: u32 = reply
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
        Ok(())
    }

    /// With `wait_replicas` set and any `found` (jobs whose result exists): `WAIT`s until
    /// replicas hold those results (see [`ResultStore::cover_with_wait`]), since a job is
    /// acked or skipped on finding its result, and one on the primary alone can be lost at
    /// a failover. No round trip when nothing was found: the common case at intake.
    pub(crate) async fn confirm_replicated(&self, found: &[&str]) -> Result<(), StoreError> {
        if self.wait.is_none() || found.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.cover_with_wait(&mut pipe, found.iter().copied());
        let replies: Vec<redis::Value> = self.query(&pipe).await?;
        self.check_wait(replies.last())
    }
}

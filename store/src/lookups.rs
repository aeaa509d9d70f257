//! Which jobs already have a result, and their lost runs: the lookups on the job path
//! (intake's `job_states`, the checks before an ack and before a re-run). One `EXISTS`
//! names every job, so the common answers — none has a result, or all have — cost one
//! command however many jobs a group holds.

use deadpool_redis::redis;

use crate::{ResultStore, StoreError};

impl ResultStore {
    /// Which of these jobs already have a result (one round trip; two when some but not all
    /// do). With `wait_replicas`, a result found counts only once replicas hold it (a
    /// further round trip; else [`StoreError::NotReplicated`]): a job is acked, or not run
    /// again, on this answer.
    pub async fn exists_many(&self, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (count,): (usize,) = self
            .query(redis::pipe().add_command(self.exists_cmd(ids)))
            .await?;
        let exists = self.which_exist(ids, count).await?;
        self.confirm_found(ids, &exists).await?;
        Ok(exists)
    }

    /// What intake needs to know of jobs before queueing them, in one round trip for all
    /// of them (two when some but not all have a result): per job, whether a result
    /// exists, and how many of its runs were lost so far (see [`Keys::failures`]).
    pub async fn job_states(&self, ids: &[&str]) -> Result<Vec<(bool, u32)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let failure_keys: Vec<String> = ids.iter().map(|id| self.keys.failures(id)).collect();
        let mut pipe = redis::pipe();
        pipe.add_command(self.exists_cmd(ids))
            .cmd("MGET")
            .arg(&failure_keys);
        let (count, failures): (usize, Vec<Option<u32>>) = self.query(&pipe).await?;
        let exists = self.which_exist(ids, count).await?;
        self.confirm_found(ids, &exists).await?;
        Ok(exists
            .into_iter()
            .zip(failures)
            .map(|(e, f)| (e, f.unwrap_or(0)))
            .collect())
    }

    /// One `EXISTS` naming the result key of every job: how many of them exist, each
    /// counted as often as it is named. One command, however many jobs: the common
    /// answers (none has a result: new jobs; all have: stored results to ack) need no
    /// command per job.
    fn exists_cmd(&self, ids: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EXISTS");
        for id in ids {
            cmd.arg(self.keys.result(id));
        }
        cmd
    }

    /// Per job, whether its result exists, given `count` from [`Self::exists_cmd`]: none
    /// or all at once, else asked job by job (one pipelined round trip).
    async fn which_exist(&self, ids: &[&str], count: usize) -> Result<Vec<bool>, StoreError> {
        if count == 0 || count == ids.len() {
            return Ok(vec![count > 0; ids.len()]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.exists(self.keys.result(id));
        }
        self.query(&pipe).await
    }

    /// A result found counts only once replicas hold it (see `confirm_replicated`).
    async fn confirm_found(&self, ids: &[&str], exists: &[bool]) -> Result<(), StoreError> {
        let found: Vec<&str> = ids
            .iter()
            .zip(exists)
            .filter_map(|(id, e)| e.then_some(*id))
            .collect();
        self.confirm_replicated(&found).await
    }
}

//! [`ClientError`]: what can go wrong talking to jetinfer, and [`WaitManyTimeout`], what
//! [`Client::wait_many`](crate::Client::wait_many) found before its deadline.

use std::time::Duration;

use jetinfer_connect::ConnectError;
use jetinfer_schemas::JobResult;
use jetinfer_store::StoreError;

/// What can go wrong talking to jetinfer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the job is invalid: {0}")]
    InvalidJob(#[from] jetinfer_schemas::JobError),
    /// JetStream refused the job (stream full, no stream, server down): retry later with
    /// the same id; de-duplication makes the retry safe.
    #[error("JetStream did not accept the job: {0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no result for {id} within {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    /// Some of the jobs given to `wait_many` had no result by the deadline; the error
    /// carries the ids still missing and every result that did arrive.
    #[error("{}", .0)]
    TimeoutMany(Box<WaitManyTimeout>),
}

/// The state of a `wait_many` call at its deadline.
#[derive(Debug, Clone)]
pub struct WaitManyTimeout {
    /// The ids without a result, each once, in the order they were given.
    pub missing: Vec<String>,
    /// One entry per id given, in the same order: the result, or `None` while missing.
    pub results: Vec<Option<JobResult<'static>>>,
    pub timeout: Duration,
}

impl std::fmt::Display for WaitManyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        write!(
            f,
            "{} of {} results missing after {:?}: {:?}",
            self.missing.len(),
            self.results.len(),
            self.timeout,
            &self.missing[..self.missing.len().min(SHOWN)]
        )?;
        if self.missing.len() > SHOWN {
            write!(f, " and {} more", self.missing.len() - SHOWN)?;
        }
        Ok(())
    }
}

//! What the worker keeps about a job between its arrival and its stored result.

use std::collections::BTreeMap;

use jetinfer_schemas::worker::RunOutcome;
use jetinfer_schemas::{now_ms, JobError, JobResult, Tensor, Timings};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Identity and bookkeeping of a job, for its result.
pub(crate) struct JobCtx {
    pub id: String,
    pub model: String,
    /// The version that serves it ("" before a model is chosen).
    pub version: String,
    pub meta: BTreeMap<String, String>,
    pub attempt: u32,
    pub published_ms: u64,
    pub deadline_ms: u64,
    /// Cache key for a successful result, when the job allows caching.
    pub cache_key: Option<String>,
    /// The inputs came by reference from this input store (0: the result store): the
    /// result's write deletes them.
    pub inputs_store: Option<u16>,
    /// Digest of the job's inputs, recorded in its result ("" if they never decoded).
    pub inputs_digest: String,
    /// The job's W3C trace id, recorded in its result ("" when untraced).
    pub trace_id: String,
    /// A result found stored under the job's id, not written by this worker, is reported
    /// `Existing` rather than `Stored` (see `RunJob::report_existing`).
    pub report_existing: bool,
    /// Tells the run request how the job ended.
    pub done: oneshot::Sender<RunOutcome>,
    /// The worker slot the job occupies until its result is written.
    pub _slot: Option<OwnedSemaphorePermit>,
    /// The job's span and timestamps (see `telemetry.rs`).
    pub trace: crate::telemetry::JobTrace,
}

impl JobCtx {
    /// How to report a job whose result someone else stored first.
    pub fn answered_elsewhere(&self) -> RunOutcome {
        if self.report_existing {
            RunOutcome::Existing
        } else {
            RunOutcome::Stored
        }
    }

    fn result<'a>(&self, mut r: JobResult<'a>) -> JobResult<'a> {
        r.meta = self.meta.clone();
        r.attempts = self.attempt;
        r.version = self.version.clone();
        r.inputs_digest = self.inputs_digest.clone();
        r.trace_id = self.trace_id.clone();
        r
    }

    /// A successful result with the batch's timings, completed at `now_ms` (one clock
    /// read for a whole batch).
    pub fn ok(
        &self,
        outputs: Vec<Tensor<'static>>,
        timings: Timings,
        now_ms: u64,
    ) -> JobResult<'static> {
        // The version is set by `result`, with the other fields the context keeps.
        let mut r = self.result(JobResult::ok_at(&self.id, &self.model, "", outputs, now_ms));
        r.timings = timings;
        r.timings.total_ms = now_ms.saturating_sub(self.published_ms) as f64;
        r
    }

    /// A failed result.
    pub fn failed(&self, error: JobError) -> JobResult<'static> {
        let mut r = self.result(JobResult::failed(&self.id, &self.model, error));
        r.timings.total_ms = now_ms().saturating_sub(self.published_ms) as f64;
        r
    }
}

/// A job waiting in a batcher.
pub(crate) struct Pending {
    /// Boxed, here and in `Finished`: a job's context is ~300 bytes and moves from the
    /// request through the batcher's queue, its shape groups and the batch to the result
    /// writer; boxed, each move copies a pointer.
    pub ctx: Box<JobCtx>,
    pub inputs: Vec<Tensor<'static>>,
    /// Lost a run before: batch it alone (see `RunJob::suspect`).
    pub suspect: bool,
}

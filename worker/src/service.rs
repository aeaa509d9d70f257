//! Run requests from dispatchers: decode and check each job, read the inputs of jobs sent
//! by reference (one `MGET` per request), answer what cannot run (invalid input, unknown
//! model, expired, inputs gone, cache hits) directly, queue the rest on their model's
//! batcher, and reply once every job's result is stored.

use std::sync::Arc;

use jetinfer_schemas::tensor::inputs_digest;
use jetinfer_schemas::worker::{RunJob, RunOutcome, RunReply, RunRequest};
use jetinfer_schemas::{
    decode_job, encode, now_ms, CachedOutputs, ErrorCode, Job, JobError, Limits, Tensor, Timings,
    SCHEMA_VERSION,
};
use jetinfer_store::{InputStores, ResultStore, StoredValue};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::job::{JobCtx, Pending};
use crate::results::{Finished, Writer};
use crate::roster::{Roster, RosterRx};
use crate::spec::check_inputs;

pub(crate) struct Service {
    /// The served models (with their batcher queues) and whether the worker accepts work.
    pub roster: RosterRx,
    pub slots: Arc<Semaphore>,
    pub writer: Writer,
    pub store: ResultStore,
    pub inputs: InputStores,
    pub limits: Limits,
}

/// A job that passed every check and may run (or be answered from the cache).
struct Runnable {
    ctx: Box<JobCtx>,
    inputs: Vec<Tensor<'static>>,
    /// Its model's batcher queue (a clone: the model may leave the roster meanwhile,
    /// and its batcher still takes the jobs admitted before).
    queue: mpsc::Sender<Pending>,
    suspect: bool,
}

/// What the store gave for one job's inputs.
enum StoredInputs {
    /// The job carries its inputs.
    Inline,
    Found(Vec<u8>),
    /// Sent by reference, but gone from the store (expired, or never stored).
    Missing,
    /// Sent by reference, and the store did not answer: try again later.
    Unreachable,
    /// Sent by reference to an input store this worker was not given.
    UnknownStore {
        store: u16,
        known: u16,
    },
}

/// Puts inputs read from the store into their job (checked against its reference).
fn attach_stored<'x>(
    job: &mut Job<'x>,
    stored: &'x StoredInputs,
    limits: &Limits,
) -> Result<(), JobError> {
    match stored {
        StoredInputs::Inline | StoredInputs::Unreachable => Ok(()),
        StoredInputs::Found(value) => job.attach_inputs(value, limits),
        StoredInputs::Missing => Err(JobError::bad_payload(
            "the job's inputs, sent by reference, are not in the store (expired, or never stored)",
        )),
        // Every worker configured alike answers the same, so sending the job back would
        // only loop it until its deadline: say what is misconfigured instead.
        StoredInputs::UnknownStore { store, known } => Err(JobError::bad_payload(format!(
            "the job's inputs are in input store {store}, but this worker knows {known} \
             (the result store and {} --inputs-redis-url): producers and workers must list \
             the same input stores",
            known - 1
        ))),
    }
}

fn find_model(roster: &Roster, job: &Job<'_>) -> Option<usize> {
    roster.find(&job.model, job.version.as_deref())
}

/// Whether a decoded job may run on `model` (its index in the roster, if served): an
/// unknown model, a passed deadline or inputs that do not fit answer it at once.
fn check_job(
    roster: &Roster,
    model: Option<usize>,
    job: &Job<'_>,
    deadline_ms: u64,
    now_ms: u64,
) -> Result<usize, JobError> {
    match model {
        None => Err(JobError::new(
            ErrorCode::UnknownModel,
            format!("this worker does not serve {} {:?}", job.model, job.version),
        )),
        Some(_) if now_ms >= deadline_ms => Err(JobError::new(
            ErrorCode::Expired,
            "deadline passed before the job reached the worker",
        )),
        Some(m) => check_inputs(&roster.models[m].info.inputs, &job.inputs).map(|()| m),
    }
}

impl Service {
    /// Handles one run request and replies on `reply`.
    pub async fn handle(
        &self,
        nats: &async_nats::Client,
        reply: async_nats::Subject,
        payload: bytes::Bytes,
    ) {
        // The jobs' payloads stay slices of the request's buffer (no copy per job).
        let request = match RunRequest::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                // Without a readable request there is nothing to answer per job: the
                // dispatcher times out and dispatches again.
                tracing::error!(error = %e, "unreadable run request");
                return;
            }
        };
        let decoded: Vec<Result<Job<'_>, JobError>> = request
            .jobs
            .iter()
            .map(|r| {
                decode_job(&r.payload, &self.limits)
                    .and_then(|j| j.validate(&self.limits).map(|_| j))
            })
            .collect();
        let fetched = self.fetch_inputs(&decoded).await;
        // One clock read for the request: its jobs arrived together.
        let received_ms = now_ms();
        let mut waits = Vec::with_capacity(request.jobs.len());
        let mut answered = Vec::new();
        let mut runnable = Vec::new();
        for ((run_job, job), inputs) in request.jobs.iter().zip(decoded).zip(&fetched) {
            let (done, wait) = oneshot::channel();
            waits.push(wait);
            let sorted = (&mut answered, &mut runnable);
            self.admit(run_job, job, inputs, done, received_ms, sorted);
        }
        self.skip_answered(&mut runnable).await;
        let from_cache = self.answer_from_cache(&mut runnable).await;
        answered.extend(from_cache);
        self.writer.write(answered).await;
        for r in runnable {
            if let Err(mpsc::error::SendError(p)) = r
                .queue
                .send(Pending {
                    ctx: r.ctx,
                    inputs: r.inputs,
                    suspect: r.suspect,
                })
                .await
            {
                let _ = p.ctx.done.send(RunOutcome::Failed);
            }
        }
        // One after the other: the reply waits for all of them anyway, and jobs of a batch
        // finish together, so this wakes about once per batch — `join_all` (a
        // `FuturesUnordered` above 30 jobs) registered a waker per job and cost ~1 % of the
        // worker (docs/benchmarks.md, "First deliveries skip the lookup, and the job reader").
        let mut outcomes = Vec::with_capacity(waits.len());
        for wait in waits {
            // A dropped sender (executor gone) means the job could not finish here.
            outcomes.push(wait.await.unwrap_or(RunOutcome::Failed));
        }
        let reply_bytes = encode(&RunReply {
            v: SCHEMA_VERSION,
            outcomes,
        });
        if let Err(e) = nats.publish(reply, reply_bytes.into()).await {
            tracing::warn!(error = %e, "cannot reply to the dispatcher; it will dispatch again and find the results");
        }
    }

    /// Reads the inputs of the jobs sent by reference: one `MGET` per input store named in
    /// the request, the stores read concurrently.
    async fn fetch_inputs(&self, jobs: &[Result<Job<'_>, JobError>]) -> Vec<StoredInputs> {
        fn by_ref<'j>(j: &'j Result<Job<'_>, JobError>) -> Option<(&'j str, u16)> {
            let job = j.as_ref().ok()?;
            Some((&*job.id, job.inputs_ref.as_ref()?.store))
        }
        let refs: Vec<(&str, u16)> = jobs.iter().filter_map(by_ref).collect();
        let mut values = self.inputs.get(&refs).await.into_iter();
        jobs.iter()
            .map(|j| match by_ref(j).and_then(|_| values.next()) {
                None => StoredInputs::Inline,
                Some(StoredValue::Found(v)) => StoredInputs::Found(v),
                Some(StoredValue::Missing) => StoredInputs::Missing,
                Some(StoredValue::Unreachable) => StoredInputs::Unreachable,
                Some(StoredValue::UnknownStore { store, known }) => {
                    StoredInputs::UnknownStore { store, known }
                }
            })
            .collect()
    }

    /// Sorts one job into answered-now (errors) or runnable; jobs beyond the free slots,
    /// or arriving while draining, are sent back (`Retry`), as are jobs whose inputs could
    /// not be read from an unreachable store.
    fn admit<'x>(
        &self,
        run_job: &RunJob,
        job: Result<Job<'x>, JobError>,
        stored_inputs: &'x StoredInputs,
        done: oneshot::Sender<RunOutcome>,
        received_ms: u64,
        (answered, runnable): (&mut Vec<Finished>, &mut Vec<Runnable>),
    ) {
        let roster = self.roster.borrow();
        let slot = if roster.accepting {
            self.slots.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let (Some(slot), false) = (slot, matches!(stored_inputs, StoredInputs::Unreachable)) else {
            let _ = done.send(RunOutcome::Retry);
            return;
        };
        let trace = crate::telemetry::JobTrace::start(run_job);
        let mut job = match job {
            Ok(job) => job,
            Err(e) => {
                // The dispatcher checked this already; a job only gets here through a bug
                // or a version skew, and without a trusted id nothing can be written.
                tracing::error!(error = %e, "dispatcher sent an invalid job");
                let _ = done.send(RunOutcome::Failed);
                return;
            }
        };
        let model = find_model(&roster, &job);
        if model.is_none() && roster.is_retired(&job.model, job.version.as_deref()) {
            // Unloaded here a moment ago: the dispatcher routes it elsewhere (or waits for
            // a worker) once it hears our heartbeat without it.
            let _ = done.send(RunOutcome::Retry);
            return;
        }
        let mut ctx = Box::new(JobCtx {
            id: job.id.to_string(),
            model: job.model.to_string(),
            version: model
                .map(|m| roster.models[m].info.version.clone())
                .unwrap_or_default(),
            meta: job.meta.clone().unwrap_or_default(),
            attempt: run_job.attempt,
            published_ms: run_job.published_ms,
            // The worker's own clock from here on: receipt + time left (see RunJob::remaining_ms).
            deadline_ms: run_job
                .remaining_ms
                .map_or(run_job.deadline_ms, |left| received_ms + left),
            cache_key: None,
            inputs_store: job.inputs_ref.as_ref().map(|r| r.store),
            inputs_digest: String::new(),
            trace_id: run_job
                .traceparent
                .as_deref()
                .and_then(jetinfer_schemas::trace_id_of)
                .unwrap_or_default()
                .to_string(),
            report_existing: run_job.report_existing,
            done,
            _slot: Some(slot),
            trace,
        });
        // The digest of inputs sent by reference is checked as they are attached: the cache
        // key needs no second pass over them.
        let known_digest = job.inputs_ref.as_ref().map(|r| r.digest.clone());
        let checked = attach_stored(&mut job, stored_inputs, &self.limits).map(|()| {
            // Every result records the digest of the inputs it answers (see
            // `JobResult::inputs_digest`): by reference it was checked as they were attached.
            ctx.inputs_digest = known_digest.unwrap_or_else(|| inputs_digest(&job.inputs));
        });
        let checked =
            checked.and_then(|()| check_job(&roster, model, &job, ctx.deadline_ms, received_ms));
        ctx.trace
            .validated(&ctx.id, &ctx.model, &ctx.version, checked.is_ok());
        match checked {
            Ok(m) => {
                if job.use_cache() {
                    let info = &roster.models[m].info;
                    ctx.cache_key = Some(self.store.keys().cache(
                        &info.name,
                        &info.version,
                        &ctx.inputs_digest,
                    ));
                }
                let inputs = job.inputs.into_iter().map(Tensor::into_owned).collect();
                runnable.push(Runnable {
                    ctx,
                    inputs,
                    queue: roster.models[m].queue.clone(),
                    suspect: run_job.suspect,
                });
            }
            Err(e) => answered.push(Finished {
                result: ctx.failed(e),
                ctx,
            }),
        }
    }

    /// Answers the runnable jobs whose outputs are cached (one `MGET`); the rest stay.
    /// Jobs that already have a result (a run whose reply was lost: the worker died after
    /// storing, or the dispatcher gave up waiting) are reported stored, not run again.
    ///
    /// Only jobs that may have run before are looked up: suspects (a run of theirs was
    /// lost, which is how a stored-but-unreplied job comes back) and JetStream
    /// redeliveries. A first run is not: a result stored before it is found by its `SET NX`
    /// (`Writer::write`), and skipping the lookup saves a Redis round trip per bundle on
    /// the common path.
    async fn skip_answered(&self, runnable: &mut Vec<Runnable>) {
        let maybe_ran = |r: &Runnable| r.suspect || r.ctx.attempt > 1;
        let ids: Vec<&str> = runnable
            .iter()
            .filter(|r| maybe_ran(r))
            .map(|r| r.ctx.id.as_str())
            .collect();
        if ids.is_empty() {
            return;
        }
        let Ok(found) = self.store.exists_many(&ids).await else {
            return; // store unreachable: run them; SET NX keeps any earlier result
        };
        let mut found = found.into_iter();
        let mut keep = Vec::with_capacity(runnable.len());
        for r in runnable.drain(..) {
            let exists = maybe_ran(&r) && found.next().unwrap_or(false);
            if exists {
                tracing::debug!(id = %r.ctx.id, "result already stored; not running again");
                let outcome = r.ctx.answered_elsewhere();
                let _ = r.ctx.done.send(outcome);
            } else {
                keep.push(r);
            }
        }
        *runnable = keep;
    }

    async fn answer_from_cache(&self, runnable: &mut Vec<Runnable>) -> Vec<Finished> {
        let keys: Vec<String> = runnable
            .iter()
            .filter_map(|r| r.ctx.cache_key.clone())
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let hits = match self.store.get_cached(&keys).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cache lookup failed; running the jobs");
                return Vec::new();
            }
        };
        let mut hits = hits.into_iter();
        let mut answered = Vec::new();
        let mut keep = Vec::with_capacity(runnable.len());
        for r in runnable.drain(..) {
            let hit = if r.ctx.cache_key.is_some() {
                hits.next().flatten()
            } else {
                None
            };
            let cached = hit.and_then(|bytes| {
                rmp_serde::from_slice::<CachedOutputs<'_>>(&bytes)
                    .ok()
                    .map(|c| c.outputs.into_iter().map(Tensor::into_owned).collect())
            });
            if r.ctx.cache_key.is_some() {
                r.ctx.trace.cache_lookup(&r.ctx.model, cached.is_some());
            }
            match cached {
                Some(outputs) => {
                    let mut result = r.ctx.ok(outputs, Timings::default(), now_ms());
                    result.cached = true;
                    answered.push(Finished { result, ctx: r.ctx });
                }
                None => keep.push(r),
            }
        }
        *runnable = keep;
        answered
    }
}

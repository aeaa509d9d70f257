//! The result writer: one Redis pipeline per group of finished jobs (results with
//! `SET NX`, first result wins; cache entries), completion notices on
//! `jetinfer.done.<id>`, then the outcome back to each job's run request.

use jetinfer_schemas::names::done_subject;
use jetinfer_schemas::worker::RunOutcome;
use jetinfer_schemas::{encode, CachedOutputs, JobResult, Status, Tensor, SCHEMA_VERSION};
use jetinfer_store::{InputStores, ResultStore, ResultWrite};

use crate::job::JobCtx;
use crate::telemetry::{write_ended, write_started};

/// A job with its result, ready to be written.
pub(crate) struct Finished {
    pub ctx: Box<JobCtx>,
    pub result: JobResult<'static>,
}

#[derive(Clone)]
pub(crate) struct Writer {
    pub store: ResultStore,
    /// Where inputs sent by reference live; those outside the result store are deleted
    /// after the results' pipeline.
    pub inputs: InputStores,
    pub nats: async_nats::Client,
    pub worker_id: String,
    /// Count forward runs per job (`--record-executions`, for the fault suite).
    pub record_executions: bool,
    /// `exit_after_store=K` fault: abort after this many writes (None = never).
    pub abort_after_writes: Option<u64>,
    pub writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Each result encoded for its key, and the cache entry of each successful cacheable run.
fn encoded(finished: &[Finished]) -> (Vec<ResultWrite<'_>>, Vec<(String, Vec<u8>)>) {
    let mut writes = Vec::with_capacity(finished.len());
    let mut cache = Vec::new();
    for f in finished {
        let r = &f.result;
        if let (Some(key), Status::Ok, false) = (&f.ctx.cache_key, r.status, r.cached) {
            let outputs = r.outputs.iter().map(Tensor::borrowed).collect();
            cache.push((
                key.clone(),
                encode(&CachedOutputs {
                    v: SCHEMA_VERSION,
                    outputs,
                }),
            ));
        }
        // A result's fixed part (field names, ids, digest, timings) is ~400 bytes: sized
        // for it and the outputs, the buffer is never grown (a reallocation per result was
        // ~1 % of the worker: docs/benchmarks.md, "First deliveries skip the lookup, and the
        // job reader").
        let outputs: usize = r.outputs.iter().map(|t| t.data.len() + 32).sum();
        writes.push(ResultWrite {
            id: &f.ctx.id,
            bytes: r.encode_sized(512 + outputs),
            // Inputs in the result store go in the results' own pipeline; others after it.
            drop_inputs: f.ctx.inputs_store == Some(0),
        });
    }
    (writes, cache)
}

impl Writer {
    /// Writes the results and tells each job's request whether it is stored. If Redis is
    /// unreachable the jobs are reported `Retry`: the dispatcher does not ack them.
    pub async fn write(&self, mut finished: Vec<Finished>) {
        if finished.is_empty() {
            return;
        }
        for f in finished.iter_mut() {
            f.result.worker.clone_from(&self.worker_id);
        }
        let (writes, cache) = encoded(&finished);
        if self.record_executions {
            let ran: Vec<&str> = finished
                .iter()
                .filter(|f| f.result.timings.batch_size > 0)
                .map(|f| f.ctx.id.as_str())
                .collect();
            if let Err(e) = self.store.record_executions(&ran).await {
                tracing::warn!(error = %e, "cannot record executions");
            }
        }
        let started = write_started();
        // Per job: `Stored`, or what `answered_elsewhere` says where `SET NX` found another
        // write's result.
        let (outcomes, written) = match self.store.put_results(&writes, &cache).await {
            Ok(stored) => {
                let mut outcomes = Vec::with_capacity(finished.len());
                for (f, newly) in finished.iter().zip(stored) {
                    if newly {
                        let _ = self
                            .nats
                            .publish(done_subject(&f.ctx.id), f.result.status.as_str().into())
                            .await;
                        outcomes.push(RunOutcome::Stored);
                    } else {
                        tracing::debug!(id = %f.ctx.id, "a result was already stored; kept the first");
                        outcomes.push(f.ctx.answered_elsewhere());
                    }
                }
                let elsewhere: Vec<(&str, u16)> = finished
                    .iter()
                    .filter_map(|f| Some((f.ctx.id.as_str(), f.ctx.inputs_store?)))
                    .filter(|(_, store)| *store != 0)
                    .collect();
                self.inputs.unlink_extra(&elsewhere).await;
                (outcomes, true)
            }
            Err(e) => {
                tracing::warn!(jobs = finished.len(), error = %e, "cannot store results; the dispatcher will retry them");
                (vec![RunOutcome::Retry; finished.len()], false)
            }
        };
        let write = write_ended(started, finished.len(), written);
        for f in &finished {
            let r = &f.result;
            let code = r.error.as_ref().map(|e| e.code.as_str());
            f.ctx.trace.written(
                &write,
                (&f.ctx.id, &f.ctx.trace_id),
                &f.ctx.model,
                r.status,
                code,
            );
        }
        drop(writes);
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if self.abort_after_writes.is_some_and(|k| n >= k) {
            tracing::error!(
                writes = n,
                "injected fault: aborting after storing results, before replying"
            );
            std::process::abort();
        }
        for (f, outcome) in finished.into_iter().zip(outcomes) {
            let _ = f.ctx.done.send(outcome);
        }
    }
}

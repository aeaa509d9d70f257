//! Jobs found with a result already stored under their id: by the intake's lookup
//! (redeliveries) or by the worker's write (first deliveries, `RunOutcome::Existing`).
//! Usually the result is their own (a redelivery after a lost ack, or a resubmission after
//! JetStream's duplicate window) and the job is acked. But an id can be reused by another job —
//! other inputs, model or version — and that job must not be told the stored result is its
//! own: it is refused as a conflict (counted, logged, announced as `conflict` on its
//! completion subject, terminated), and the stored result stays untouched.

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::names::{done_subject, DONE_CONFLICT};
use jetinfer_schemas::{decode_job, Limits};
use jetinfer_store::{decode_owned, ResultStore};

use crate::job::HeldJob;
use crate::telemetry;

/// Who found the stored results the jobs are settled against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FoundBy {
    /// The intake's `EXISTS`: Redis itself said each result is there.
    Lookup,
    /// The worker's reply (`RunOutcome::Existing`): only its word until the result is
    /// read here, so a job whose result is not found runs again, as an unverified
    /// `stored` would (docs/security.md).
    Worker,
}

/// Acks the jobs whose stored results are their own and refuses the others (one `MGET`
/// for all of them); returns the jobs to run again (a worker's claim no result backs).
/// When Redis cannot be read, jobs found by the intake's lookup are acked as before the
/// comparison existed (they do have a result, and running them again could not store
/// another), and jobs found by a worker run again.
pub(crate) async fn settle_answered(
    jobs: Vec<HeldJob>,
    found_by: FoundBy,
    store: &ResultStore,
    nats: &async_nats::Client,
    limits: Limits,
) -> Vec<HeldJob> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let stored = match store.get_many_raw(&ids).await {
        Ok(results) => results,
        Err(e) if found_by == FoundBy::Worker => {
            tracing::warn!(jobs = ids.len(), error = %e, "cannot read the results a worker found stored; running the jobs again");
            return jobs;
        }
        Err(e) => {
            tracing::warn!(jobs = ids.len(), error = %e, "cannot read the stored results to compare them; acking the jobs");
            vec![None; jobs.len()]
        }
    };
    let mut again = Vec::new();
    let mut settled = Vec::with_capacity(jobs.len());
    for (job, raw) in jobs.into_iter().zip(stored) {
        if raw.is_none() && found_by == FoundBy::Worker {
            telemetry::unverified_stored(1);
            tracing::warn!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), "worker said a result was stored but none exists; running the job again");
            again.push(job);
        } else {
            settled.push((job, raw));
        }
    }
    join_all(settled.into_iter().map(|(job, raw)| async move {
        let result = raw.and_then(|b| decode_owned(&job.id, &b).ok());
        let own = match (&result, decode_job(&job.payload, &limits)) {
            (Some(result), Ok(decoded)) => result.answers(&decoded),
            // Nothing to compare (unreadable or gone since): take it as the job's own.
            _ => true,
        };
        if own {
            tracing::debug!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), delivered = job.attempt, "job already has a result; acking without running");
            let _ = job.acker.ack().await;
            return;
        }
        telemetry::id_conflict(job.priority);
        tracing::warn!(parent: &*job.span, id = %job.id, trace_id = job.trace_id(), model = %job.route.model, "a result for another job with this id (other inputs, model or version) is stored; refusing the job");
        let _ = nats.publish(done_subject(&job.id), DONE_CONFLICT.into()).await;
        let _ = job.acker.ack_with(AckKind::Term).await;
    }))
    .await;
    again
}

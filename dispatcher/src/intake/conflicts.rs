//! Jobs that arrive with a result already stored under their id. Usually the result is
//! their own (a redelivery after a lost ack, or a resubmission after JetStream's duplicate
//! window) and the job is acked without running. But an id can be reused by another job —
//! other inputs, model or version — and that job must not be told the stored result is its
//! own: it is refused as a conflict (counted, logged, announced as `conflict` on its
//! completion subject, terminated), and the stored result stays untouched.

use async_nats::jetstream::AckKind;
use futures::future::join_all;
use jetinfer_schemas::names::{done_subject, DONE_CONFLICT};
use jetinfer_schemas::{decode_job, Limits};
use jetinfer_store::ResultStore;

use crate::job::HeldJob;
use crate::telemetry;

/// Acks the jobs whose stored results are their own and refuses the others (one `MGET`
/// for all of them). When the results cannot be read, the jobs are acked as before the
/// check existed: they do have a result, and running them again could not store another.
pub(super) async fn settle_answered(
    jobs: Vec<HeldJob>,
    store: &ResultStore,
    nats: &async_nats::Client,
    limits: Limits,
) {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let stored = match store.get_many(&ids).await {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(jobs = ids.len(), error = %e, "cannot read the stored results to compare them; acking the jobs");
            vec![None; jobs.len()]
        }
    };
    join_all(jobs.into_iter().zip(stored).map(|(job, result)| async move {
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
}

//! A job the dispatcher holds: what scheduling needs, the untouched payload for the
//! worker, and the handle that acks its JetStream message.
//!
//! The handle ([`JobAck`]) publishes to the message's ack subject; in unit tests it is a
//! stand-in, so that scheduling logic can hold jobs without a JetStream message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::AckKind;
use async_nats::Subject;
use bytes::Bytes;
#[cfg(test)]
use futures::future::BoxFuture;
use jetinfer_schemas::worker::RunJob;
use jetinfer_schemas::Priority;
use tokio::sync::OwnedSemaphorePermit;

use crate::routing::payload::VersionSlot;
use crate::telemetry::JobSpan;
use jetinfer_schemas::Route;

/// A stand-in for a JetStream message's acker, where there is no message (the scheduler's
/// unit tests): `ack` once its result is stored, `ack_with` for in-progress acks, naks and
/// terms.
#[cfg(test)]
pub(crate) trait Ack: Send + Sync {
    fn ack(&self) -> BoxFuture<'_, Result<(), async_nats::Error>>;
    fn ack_with(&self, kind: AckKind) -> BoxFuture<'_, Result<(), async_nats::Error>>;
}

/// Acknowledges one JetStream message by publishing to its ack subject (`$JS.ACK.…`, the
/// message's reply subject) through the intake's client — shared, so a held job costs one
/// reference count, where async-nats's `Acker` carried a clone of the JetStream context —
/// or in unit tests a stand-in.
pub(crate) enum JobAck {
    Nats {
        nats: Arc<async_nats::Client>,
        /// `None` only for a message that did not come from a consumer (never pulled).
        reply: Option<Subject>,
    },
    #[cfg(test)]
    Other(Box<dyn Ack>),
}

impl JobAck {
    /// The message is done with (`+ACK`, sent as an empty payload, as async-nats does).
    pub async fn ack(&self) -> Result<(), async_nats::Error> {
        match self {
            JobAck::Nats { nats, reply } => publish(nats, reply, Bytes::new()).await,
            #[cfg(test)]
            JobAck::Other(a) => a.ack().await,
        }
    }

    pub async fn ack_with(&self, kind: AckKind) -> Result<(), async_nats::Error> {
        match self {
            JobAck::Nats { nats, reply } => publish(nats, reply, kind.into()).await,
            #[cfg(test)]
            JobAck::Other(a) => a.ack_with(kind).await,
        }
    }
}

async fn publish(
    nats: &async_nats::Client,
    reply: &Option<Subject>,
    ack: Bytes,
) -> Result<(), async_nats::Error> {
    let Some(reply) = reply else {
        return Err("no ack subject: not a message from a JetStream consumer".into());
    };
    Ok(nats.publish(reply.clone(), ack).await?)
}

/// A job the dispatcher holds, boxed: its fields are ~300 bytes, and a job moves five times
/// between intake and its ack (group, admit, the ready queues, its bundle, the settling of
/// the bundle); boxed, each move copies a pointer (docs/benchmarks.md, "Future sizes and
/// held jobs"). Fields are reached through `Deref`.
pub(crate) struct HeldJob(Box<Held>);

impl HeldJob {
    pub fn new(held: Held) -> HeldJob {
        HeldJob(Box::new(held))
    }
}

impl std::ops::Deref for HeldJob {
    type Target = Held;
    fn deref(&self) -> &Held {
        &self.0
    }
}

impl std::ops::DerefMut for HeldJob {
    fn deref_mut(&mut self) -> &mut Held {
        &mut self.0
    }
}

/// What the dispatcher knows of a job it holds (see [`HeldJob`]).
pub(crate) struct Held {
    pub id: String,
    /// The model and the version the job named or was routed to.
    pub route: Route,
    /// Set when the version in `route` was picked by the model's weights, not named by the
    /// job: where the worker's copy of the payload gets it. `payload` itself stays as the
    /// producer sent it (result comparisons and dead letters see the job as published).
    pub routed: Option<VersionSlot>,
    pub priority: Priority,
    /// Effective absolute deadline, Unix ms.
    pub deadline_ms: u64,
    /// When JetStream stored the message, Unix ms.
    pub published_ms: u64,
    /// JetStream's delivery count (1 on the first delivery), reported in the result.
    pub attempt: u32,
    /// Runs of this job lost so far (worker died, timed out, could not run it), kept in
    /// Redis across dispatchers; at `--max-attempts` the job is `poison`.
    pub failures: u32,
    /// The intake looked for a result already stored under its id (redeliveries, and any
    /// job while Redis was down). First deliveries skip that round trip: their worker
    /// reports a result it finds stored (`RunOutcome::Existing`) and `conflicts` settles
    /// the job then.
    pub looked_up: bool,
    pub payload: Bytes,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The job's span here (its trace continues the producer's); ends when the job is
    /// dropped, i.e. acked, answered or handed back.
    pub span: JobSpan,
    pub meta: BTreeMap<String, String>,
    /// When it entered this dispatcher's queues (ordering and aging).
    pub since: Instant,
    pub acker: JobAck,
    /// One of the priority's in-flight slots, released when the job is dropped (answered).
    pub _permit: OwnedSemaphorePermit,
}

impl Held {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms
    }

    /// The producer's trace id ("" when it sent none), for log lines about this job.
    pub fn trace_id(&self) -> &str {
        self.traceparent
            .as_deref()
            .and_then(jetinfer_schemas::trace_id_of)
            .unwrap_or_default()
    }

    /// What the worker gets: the payload, naming the routed version if there is one, and
    /// the time left counted from `now_ms` (the run request's time, read once per bundle).
    pub fn to_run_job(&self, now_ms: u64) -> RunJob {
        let payload = match (self.routed, &self.route.version) {
            (Some(slot), Some(version)) => slot.write(&self.payload, version),
            _ => self.payload.clone(),
        };
        RunJob {
            payload,
            priority: self.priority,
            deadline_ms: self.deadline_ms,
            remaining_ms: Some(self.deadline_ms.saturating_sub(now_ms)),
            published_ms: self.published_ms,
            // Deliveries plus runs lost on dead or stuck workers: what the result reports.
            attempt: self.attempt + self.failures,
            suspect: self.failures > 0,
            report_existing: !self.looked_up,
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        }
    }
}

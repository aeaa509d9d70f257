//! The dispatcher's metrics and spans, in one place so the job path only calls one
//! function at each point of interest.
//!
//! Spans of one job (all in the producer's trace, from its `traceparent`), named and
//! attributed after the OpenTelemetry messaging conventions (`messaging.*`; our own
//! attributes under `jetinfer.*`): `dispatcher.job`, exported as `process <subject>` (from
//! receipt to ack), with children `jetstream.wait` (publish → receipt, from the message's
//! JetStream timestamp), `dispatcher.queue` (waiting for a worker in the ready queues) and
//! one `dispatcher.dispatch`, exported as `send jetinfer.worker.{id}.run`, per run request to
//! a worker, whose context goes to the worker in `RunJob.traceparent`.
//!
//! Metrics are listed with their meaning in docs/metrics.md. Queue depth is counted from
//! pushes and pops, never sampled.

use std::time::{Instant, SystemTime};

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use jetinfer_schemas::names::{consumer_name, job_subject, worker_run_subject};
use jetinfer_schemas::{now_ms, ErrorCode, Priority, Route};
use jetinfer_telemetry::context::{
    continue_trace_with_state, record_span, traceparent_of, tracestate_of, unix_ms, wall_time_of,
    KeyValue,
};
use jetinfer_telemetry::JOB_SPANS;
use tracing::Span;

pub(crate) const JOBS_RECEIVED: &str = "jetinfer_jobs_received_total";
pub(crate) const JOBS_COMPLETED: &str = "jetinfer_jobs_completed_total";
pub(crate) const JOBS_FAILED: &str = "jetinfer_dispatcher_jobs_failed_total";
pub(crate) const QUEUE_PUSHES: &str = "jetinfer_queue_pushes_total";
pub(crate) const QUEUE_POPS: &str = "jetinfer_queue_pops_total";
pub(crate) const QUEUE_DEPTH: &str = "jetinfer_queue_depth_jobs";
pub(crate) const HELD: &str = "jetinfer_dispatcher_held_jobs";
pub(crate) const JOB_DURATION: &str = "jetinfer_job_duration_seconds";
pub(crate) const QUEUE_WAIT: &str = "jetinfer_queue_wait_seconds";
pub(crate) const REDELIVERIES: &str = "jetinfer_redeliveries_total";
pub(crate) const REDISPATCHES: &str = "jetinfer_redispatches_total";
pub(crate) const DEAD_LETTERS: &str = "jetinfer_dead_letters_total";
pub(crate) const ID_CONFLICTS: &str = "jetinfer_id_conflicts_total";
pub(crate) const WORKERS: &str = "jetinfer_workers";
pub(crate) const WORKER_FREE_SLOTS: &str = "jetinfer_worker_free_slots";
pub(crate) const WORKER_IN_FLIGHT: &str = "jetinfer_dispatcher_in_flight_jobs";
pub(crate) const ROUTED: &str = "jetinfer_dispatcher_routed_total";
pub(crate) const ACTIVE: &str = "jetinfer_dispatcher_active";

/// Every metric the dispatcher exports, for docs and tests.
pub const METRIC_NAMES: &[&str] = &[
    JOBS_RECEIVED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    QUEUE_PUSHES,
    QUEUE_POPS,
    QUEUE_DEPTH,
    HELD,
    JOB_DURATION,
    QUEUE_WAIT,
    REDELIVERIES,
    REDISPATCHES,
    DEAD_LETTERS,
    ID_CONFLICTS,
    WORKERS,
    WORKER_FREE_SLOTS,
    WORKER_IN_FLIGHT,
    ROUTED,
    ACTIVE,
];

/// Describes every metric and starts the per-priority counters at zero, so a scrape shows
/// them (and rates work) before the first event.
pub(crate) fn describe() {
    describe_counter!(
        JOBS_RECEIVED,
        "Job messages pulled from JetStream, by priority and model (the subject's)"
    );
    describe_counter!(
        JOBS_COMPLETED,
        "Jobs acked after a worker stored their result, by priority and model"
    );
    describe_counter!(
        JOBS_FAILED,
        "Jobs the dispatcher answered with an error itself, by priority, model and code"
    );
    describe_counter!(
        QUEUE_PUSHES,
        "Jobs put in the dispatcher's ready queues, by priority"
    );
    describe_counter!(
        QUEUE_POPS,
        "Jobs taken out of the ready queues (dispatched, expired, returned), by priority"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Jobs waiting in the ready queues for a worker (pushes minus pops), by priority"
    );
    describe_gauge!(
        HELD,
        "Jobs held un-acked by this dispatcher (queued or running), by priority"
    );
    describe_histogram!(
        JOB_DURATION,
        ::metrics::Unit::Seconds,
        "Publish to ack, by priority, model and version (end-to-end latency of jobs run by a worker)"
    );
    describe_histogram!(
        QUEUE_WAIT,
        ::metrics::Unit::Seconds,
        "Publish to dispatch to a worker (time in JetStream plus the ready queues), by priority, model and version"
    );
    describe_counter!(
        REDELIVERIES,
        "Messages JetStream delivered more than once, by priority"
    );
    describe_counter!(
        REDISPATCHES,
        "Jobs dispatched again after their worker died, timed out, could not run them, or said stored without a result in Redis (`unverified`), by reason"
    );
    describe_counter!(
        ID_CONFLICTS,
        "Jobs refused because another job with the same id and other inputs, model or version already has the result, by priority"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Poison jobs copied to the dead-letter stream, by priority"
    );
    describe_gauge!(WORKERS, "Live workers (heartbeat within the timeout)");
    describe_gauge!(
        WORKER_FREE_SLOTS,
        "Free slots of each worker, from its last heartbeat"
    );
    describe_gauge!(
        WORKER_IN_FLIGHT,
        "Jobs this dispatcher has running on each worker"
    );
    describe_counter!(
        ROUTED,
        "Jobs naming no version that the model's traffic weights sent to a version, by model and version"
    );
    for p in Priority::ALL {
        counter!(REDELIVERIES, "priority" => p.as_str()).increment(0);
        counter!(DEAD_LETTERS, "priority" => p.as_str()).increment(0);
        counter!(ID_CONFLICTS, "priority" => p.as_str()).increment(0);
        counter!(QUEUE_PUSHES, "priority" => p.as_str()).increment(0);
        counter!(QUEUE_POPS, "priority" => p.as_str()).increment(0);
        gauge!(QUEUE_DEPTH, "priority" => p.as_str()).set(0.0);
        gauge!(HELD, "priority" => p.as_str()).set(0.0);
    }
    for reason in ["worker_gone", "failed"] {
        counter!(REDISPATCHES, "reason" => reason).increment(0);
    }
    describe_gauge!(
        ACTIVE,
        "1 while this dispatcher holds the dispatcher lease and schedules, 0 while it is a standby"
    );
    gauge!(WORKERS).set(0.0);
    gauge!(ACTIVE).set(0.0);
}

/// Whether this dispatcher is the active one (holds the lease).
pub(crate) fn lease_active(active: bool) {
    gauge!(ACTIVE).set(if active { 1.0 } else { 0.0 });
}

/// Whether metrics are recorded (`--metrics-addr`): the per-job functions below return at
/// once when not, instead of building label strings for a recorder that is not there.
fn on() -> bool {
    jetinfer_telemetry::prometheus::installed()
}

/// A message was pulled (counted before it is decoded, under its subject's model).
pub(crate) fn received(priority: Priority, model: &str, delivered: u32) {
    if !on() {
        return;
    }
    counter!(JOBS_RECEIVED, "priority" => priority.as_str(), "model" => model.to_string())
        .increment(1);
    if delivered > 1 {
        counter!(REDELIVERIES, "priority" => priority.as_str()).increment(1);
    }
}

/// The dispatcher answered a job with an error result.
pub(crate) fn failed(priority: Priority, model: &str, code: ErrorCode) {
    counter!(JOBS_FAILED, "priority" => priority.as_str(), "model" => model.to_string(), "code" => code.as_str())
        .increment(1);
}

/// The counter of jobs routed to `model` at `version`, registered once per registry write
/// so that counting a routed job allocates nothing.
pub(crate) fn routed_counter(model: &str, version: &str) -> ::metrics::Counter {
    counter!(ROUTED, "model" => model.to_string(), "version" => version.to_string())
}

/// A job naming no version was routed to the version of `counter`.
pub(crate) fn routed(counter: &::metrics::Counter) {
    counter.increment(1);
}

/// A poison job was copied to the dead-letter stream.
pub fn dead_letter(priority: Priority) {
    counter!(DEAD_LETTERS, "priority" => priority.as_str()).increment(1);
}

pub(crate) fn queue_push(priority: Priority) {
    if !on() {
        return;
    }
    counter!(QUEUE_PUSHES, "priority" => priority.as_str()).increment(1);
    gauge!(QUEUE_DEPTH, "priority" => priority.as_str()).increment(1.0);
}

pub(crate) fn queue_pop(priority: Priority) {
    if !on() {
        return;
    }
    counter!(QUEUE_POPS, "priority" => priority.as_str()).increment(1);
    gauge!(QUEUE_DEPTH, "priority" => priority.as_str()).decrement(1.0);
}

/// Jobs a worker reported stored have no result in Redis; they run again.
pub(crate) fn unverified_stored(jobs: usize) {
    redispatched("unverified", jobs);
}

/// A job reused the id of a job with other inputs, model or version, whose result stands.
pub(crate) fn id_conflict(priority: Priority) {
    counter!(ID_CONFLICTS, "priority" => priority.as_str()).increment(1);
}

/// A job was re-dispatched; `reason` is `worker_gone`, `failed` or `unverified`.
pub(crate) fn redispatched(reason: &'static str, jobs: usize) {
    counter!(REDISPATCHES, "reason" => reason).increment(jobs as u64);
}

/// A worker's heartbeat: its free slots.
pub(crate) fn worker_seen(worker: &str, free_slots: u32) {
    gauge!(WORKER_FREE_SLOTS, "worker" => worker.to_string()).set(free_slots as f64);
}

/// The number of live workers changed.
pub(crate) fn workers_live(n: usize) {
    gauge!(WORKERS).set(n as f64);
}

/// A job's W3C trace context as it travels: `traceparent` and its `tracestate`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceHeaders<'a> {
    pub traceparent: Option<std::borrow::Cow<'a, str>>,
    pub tracestate: Option<std::borrow::Cow<'a, str>>,
}

impl TraceHeaders<'_> {
    fn into_owned(self) -> TraceHeaders<'static> {
        TraceHeaders {
            traceparent: self.traceparent.map(|v| v.into_owned().into()),
            tracestate: self.tracestate.map(|v| v.into_owned().into()),
        }
    }
}

/// The span of a job in this dispatcher; counts the job as held until dropped.
pub(crate) struct JobSpan {
    span: Span,
    priority: Priority,
}

impl std::ops::Deref for JobSpan {
    type Target = Span;
    fn deref(&self) -> &Span {
        &self.span
    }
}

impl Drop for JobSpan {
    fn drop(&mut self) {
        if on() {
            gauge!(HELD, "priority" => self.priority.as_str()).decrement(1.0);
        }
    }
}

/// The span of a job in this dispatcher, continuing the producer's trace. It lives as
/// long as the job is held (ends at ack, error answer or hand-back). Records the wait in
/// JetStream as a child span, from the message's publish time. `version` is the one the
/// job named or was routed to (none: any version of the model).
#[allow(clippy::too_many_arguments)]
pub(crate) fn job_span(
    id: &str,
    model: &str,
    version: Option<&str>,
    priority: Priority,
    delivered: u32,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    published_ms: u64,
) -> JobSpan {
    // Field values are computed only where the span is enabled (see `JOB_SPANS`).
    let span = tracing::debug_span!(
        target: JOB_SPANS,
        "dispatcher.job",
        otel.name = %format_args!("process {}", job_subject(priority, model)),
        otel.kind = "consumer",
        "messaging.system" = "nats",
        "messaging.operation.type" = "process",
        "messaging.destination.name" = %job_subject(priority, model),
        "messaging.consumer.group.name" = %consumer_name(priority),
        "messaging.message.id" = %id,
        "jetinfer.model" = %model,
        "jetinfer.version" = version,
        "jetinfer.priority" = %priority,
        "jetinfer.delivered" = delivered,
        trace_id = tracing::field::Empty,
    );
    continue_trace_with_state(&span, traceparent, tracestate);
    record_span(
        "jetstream.wait",
        &span,
        || (unix_ms(published_ms), SystemTime::now()),
        &[KeyValue::new("messaging.system", "nats")],
    );
    if on() {
        gauge!(HELD, "priority" => priority.as_str()).increment(1.0);
    }
    JobSpan { span, priority }
}

/// A job goes to `worker`: records its wait in the ready queues (since `queued_since`)
/// under `job_span` and the queue-wait histogram, and returns the dispatch span (ends when
/// the run request ends) and the `traceparent` the worker continues (the producer's,
/// `producer_traceparent`, when spans are not exported).
pub(crate) fn dispatch(
    job_span: &Span,
    priority: Priority,
    route: &Route,
    queued_since: Instant,
    published_ms: u64,
    attempt: u32,
    producer: TraceHeaders<'_>,
    worker: &str,
) -> (Span, TraceHeaders<'static>) {
    record_span(
        "dispatcher.queue",
        job_span,
        || (wall_time_of(queued_since), SystemTime::now()),
        &[],
    );
    if on() {
        histogram!(
            QUEUE_WAIT,
            "priority" => priority.as_str(),
            "model" => route.model.clone(),
            "version" => version_label(route).to_string()
        )
        .record(now_ms().saturating_sub(published_ms) as f64 / 1e3);
        gauge!(WORKER_IN_FLIGHT, "worker" => worker.to_string()).increment(1.0);
    }
    let span = tracing::debug_span!(
        target: JOB_SPANS,
        parent: job_span,
        "dispatcher.dispatch",
        otel.name = "send jetinfer.worker.{id}.run",
        otel.kind = "producer",
        "messaging.system" = "nats",
        "messaging.operation.type" = "send",
        "messaging.destination.name" = %worker_run_subject(worker),
        "messaging.destination.template" = "jetinfer.worker.{id}.run",
        "jetinfer.worker" = %worker,
        "jetinfer.attempt" = attempt,
    );
    // With spans exported the worker continues the dispatch span; without, the producer's.
    let headers = match traceparent_of(&span) {
        Some(traceparent) => TraceHeaders {
            traceparent: Some(traceparent.into()),
            tracestate: tracestate_of(&span).map(Into::into),
        },
        None => producer.into_owned(),
    };
    (span, headers)
}

/// A run request to `worker` that carried `sent` jobs ended.
pub(crate) fn bundle_ended(worker: &str, sent: usize) {
    if !on() {
        return;
    }
    gauge!(WORKER_IN_FLIGHT, "worker" => worker.to_string()).decrement(sent as f64);
}

/// The `version` label of a job's latency: the version it named or was routed to, or
/// `default` (no registry weights: whichever version a worker serves).
pub(crate) fn version_label(route: &Route) -> &str {
    route.version.as_deref().unwrap_or("default")
}

/// A job was acked with its result stored by a worker.
pub(crate) fn completed(priority: Priority, route: &Route, published_ms: u64) {
    if !on() {
        return;
    }
    let (model, version) = (route.model.as_str(), version_label(route));
    let p = priority.as_str();
    counter!(JOBS_COMPLETED, "priority" => p, "model" => model.to_string()).increment(1);
    histogram!(JOB_DURATION, "priority" => p, "model" => model.to_string(), "version" => version.to_string())
        .record(now_ms().saturating_sub(published_ms) as f64 / 1e3);
}

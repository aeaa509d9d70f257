//! The worker's spans and metrics, so the job path calls one function at each point.
//!
//! Spans of one job, continuing the dispatcher's `dispatcher.dispatch` span (from
//! `RunJob.traceparent`), attributed after the OpenTelemetry messaging conventions
//! (`messaging.*`; ours under `jetinfer.*`): `worker.job`, exported as
//! `process jetinfer.worker.{id}.run` (arrival to stored result, with `jetinfer.cache` and
//! `jetinfer.status`), and children recorded with their times: `worker.validate` (decode and
//! input checks), `worker.cache_lookup` (the bundle's `MGET`, when the job may be cached),
//! `worker.queue` (waiting in the model's batcher) and `worker.result_write` (the Redis
//! pipeline that stored it). Each forward is one `worker.batch` span of its own, linked
//! (`follows_from`) to the `worker.job` span of every job in it, with model, version,
//! device, `messaging.batch.message_count` and compute time.
//!
//! Metrics are listed in docs/metrics.md. Every function here takes plain values (names,
//! statuses, a job's [`JobTrace`]), never the job structs of the worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use jetinfer_schemas::worker::RunJob;
use jetinfer_schemas::{Priority, Status};
use jetinfer_telemetry::context::{continue_trace_with_state, record_span, KeyValue};
use jetinfer_telemetry::JOB_SPANS;
use tracing::Span;

pub(crate) const RESULTS: &str = "jetinfer_worker_results_total";
pub(crate) const JOBS_FAILED: &str = "jetinfer_worker_jobs_failed_total";
pub(crate) const IN_FLIGHT: &str = "jetinfer_worker_in_flight_jobs";
pub(crate) const SLOTS: &str = "jetinfer_worker_slots";
pub(crate) const BATCH_SIZE: &str = "jetinfer_batch_size_jobs";
pub(crate) const FORWARD: &str = "jetinfer_forward_duration_seconds";
pub(crate) const BATCH_QUEUE_WAIT: &str = "jetinfer_batch_queue_wait_seconds";
pub(crate) const CACHE_HITS: &str = "jetinfer_cache_hits_total";
pub(crate) const CACHE_MISSES: &str = "jetinfer_cache_misses_total";
pub(crate) const RESULT_WRITE: &str = "jetinfer_result_write_duration_seconds";
pub(crate) const GPU_USED: &str = "jetinfer_gpu_memory_used_bytes";
pub(crate) const GPU_TOTAL: &str = "jetinfer_gpu_memory_total_bytes";
pub(crate) const BATCHES: &str = "jetinfer_worker_batches_total";
pub(crate) const SERVED_RATE: &str = "jetinfer_worker_served_jobs_per_second";
pub(crate) const MODEL_BUSY: &str = "jetinfer_worker_model_busy_ratio";
pub(crate) const CAPACITY: &str = "jetinfer_worker_capacity_jobs_per_second";
pub(crate) const DEVICE_BUSY: &str = "jetinfer_worker_device_busy_ratio";

/// Every metric the worker exports, for docs and tests.
pub const METRIC_NAMES: &[&str] = &[
    RESULTS,
    JOBS_FAILED,
    IN_FLIGHT,
    SLOTS,
    BATCH_SIZE,
    FORWARD,
    BATCH_QUEUE_WAIT,
    CACHE_HITS,
    CACHE_MISSES,
    RESULT_WRITE,
    GPU_USED,
    GPU_TOTAL,
    BATCHES,
    SERVED_RATE,
    MODEL_BUSY,
    CAPACITY,
    DEVICE_BUSY,
];

/// Describes the metrics; sets the constant ones.
pub(crate) fn describe(slots: u32) {
    describe_counter!(
        RESULTS,
        "Results this worker stored, by priority, model and status (ok, error, expired)"
    );
    describe_counter!(
        JOBS_FAILED,
        "Jobs this worker answered with an error, by priority, model and code"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Jobs holding one of this worker's slots (queued in a batcher, running or being written)"
    );
    describe_gauge!(SLOTS, "Jobs this worker accepts at once");
    describe_histogram!(BATCH_SIZE, "Jobs per forward, by model");
    describe_histogram!(
        FORWARD,
        ::metrics::Unit::Seconds,
        "Forward time of one batch on its device (inputs to outputs on the CPU), by model and version"
    );
    describe_histogram!(
        BATCH_QUEUE_WAIT,
        ::metrics::Unit::Seconds,
        "Time a job waited in its model's batcher, by priority, model and version"
    );
    describe_counter!(CACHE_HITS, "Jobs answered from the result cache, by model");
    describe_counter!(
        CACHE_MISSES,
        "Cacheable jobs not found in the result cache, by model"
    );
    describe_histogram!(
        RESULT_WRITE,
        ::metrics::Unit::Seconds,
        "One Redis pipeline storing a group of results"
    );
    describe_gauge!(
        GPU_USED,
        ::metrics::Unit::Bytes,
        "Memory in use on the CUDA device (all processes, from cuMemGetInfo), by device"
    );
    describe_gauge!(
        GPU_TOTAL,
        ::metrics::Unit::Bytes,
        "Memory of the CUDA device, by device"
    );
    describe_counter!(
        BATCHES,
        "Batches run, by model, version, device and instance (the executor thread that ran it)"
    );
    describe_gauge!(
        SERVED_RATE,
        "Jobs run through a forward per second over the last 10 s, by model and version"
    );
    describe_gauge!(
        MODEL_BUSY,
        "Share of the last 10 s the model's executor threads spent in its forwards (averaged over its threads), by model and version"
    );
    describe_gauge!(
        CAPACITY,
        "Jobs/s the model's threads would run at full batches, from a fit of measured batch time against batch size, by model and version"
    );
    describe_gauge!(
        DEVICE_BUSY,
        "Share of the last 10 s during which at least one executor thread of the device was in a forward, by device"
    );
    gauge!(SLOTS).set(slots as f64);
    gauge!(IN_FLIGHT).set(0.0);
}

/// Whether metrics are recorded (`--metrics-addr`): the per-job calls below skip the
/// `metrics` macros when not, instead of building label strings for no recorder.
fn on() -> bool {
    jetinfer_telemetry::prometheus::installed()
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

fn from_micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

/// A job's span and timestamps, kept with the job; counts the job in flight until
/// dropped (with its slot).
pub(crate) struct JobTrace {
    pub span: Span,
    priority: Priority,
    /// Whether anything reads the timestamps below (an exported span, or metrics): when
    /// not, no clock is read for them (see `record_span`).
    timed: bool,
    arrived: SystemTime,
    /// Since when the job waits for the next step (Unix µs), for the queue span.
    waiting_since: AtomicU64,
}

impl JobTrace {
    /// Starts the job's span on arrival, continuing the dispatcher's trace.
    pub fn start(run_job: &RunJob) -> Self {
        let span = tracing::debug_span!(
            target: JOB_SPANS,
            "worker.job",
            otel.name = "process jetinfer.worker.{id}.run",
            otel.kind = "consumer",
            "messaging.system" = "nats",
            "messaging.operation.type" = "process",
            "messaging.destination.template" = "jetinfer.worker.{id}.run",
            "messaging.message.id" = tracing::field::Empty,
            "jetinfer.model" = tracing::field::Empty,
            "jetinfer.version" = tracing::field::Empty,
            "jetinfer.priority" = %run_job.priority,
            "jetinfer.attempt" = run_job.attempt,
            "jetinfer.cache" = tracing::field::Empty,
            "jetinfer.status" = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        continue_trace_with_state(
            &span,
            run_job.traceparent.as_deref(),
            run_job.tracestate.as_deref(),
        );
        if on() {
            gauge!(IN_FLIGHT).increment(1.0);
        }
        let timed = !span.is_disabled() || on();
        let now = if timed { SystemTime::now() } else { UNIX_EPOCH };
        JobTrace {
            span,
            priority: run_job.priority,
            timed,
            arrived: now,
            waiting_since: AtomicU64::new(micros(now)),
        }
    }

    /// The job is decoded and checked (`ok`: it may run).
    pub fn validated(&self, id: &str, model: &str, version: &str, ok: bool) {
        let now = self.now();
        self.waiting_since.store(micros(now), Ordering::Relaxed);
        self.span.record("messaging.message.id", id);
        self.span.record("jetinfer.model", model);
        self.span.record("jetinfer.version", version);
        record_span(
            "worker.validate",
            &self.span,
            || (self.arrived, now),
            &[KeyValue::new("valid", ok)],
        );
    }

    /// The time, when anything reads this job's timestamps.
    fn now(&self) -> SystemTime {
        if self.timed {
            SystemTime::now()
        } else {
            UNIX_EPOCH
        }
    }
}

impl Drop for JobTrace {
    fn drop(&mut self) {
        if on() {
            gauge!(IN_FLIGHT).decrement(1.0);
        }
    }
}

impl JobTrace {
    /// The cache lookup of a cacheable job of `model` ended (`hit`: answered from the
    /// cache).
    pub fn cache_lookup(&self, model: &str, hit: bool) {
        let now = self.now();
        let since = from_micros(self.waiting_since.load(Ordering::Relaxed));
        self.waiting_since.store(micros(now), Ordering::Relaxed);
        record_span(
            "worker.cache_lookup",
            &self.span,
            || (since, now),
            &[KeyValue::new("hit", hit)],
        );
        self.span
            .record("jetinfer.cache", if hit { "hit" } else { "miss" });
        if !on() {
            return;
        }
        if hit {
            counter!(CACHE_HITS, "model" => model.to_string()).increment(1);
        } else {
            counter!(CACHE_MISSES, "model" => model.to_string()).increment(1);
        }
    }

    /// The job's result was part of `write` and has `status` (`code`: its error code;
    /// none for an expired job).
    pub fn written(
        &self,
        write: &Write,
        (id, trace_id): (&str, &str),
        model: &str,
        status: Status,
        code: Option<&'static str>,
    ) {
        let status_word = status.as_str();
        record_span(
            "worker.result_write",
            &self.span,
            || (write.started, write.ended),
            &[
                KeyValue::new("jobs", write.jobs as i64),
                KeyValue::new("stored", write.stored),
            ],
        );
        self.span.record("jetinfer.status", status_word);
        if !write.stored {
            return;
        }
        let p = self.priority.as_str();
        if on() {
            counter!(RESULTS, "priority" => p, "model" => model.to_string(), "status" => status_word)
                .increment(1);
        }
        if status != Status::Ok {
            let code = code.unwrap_or("expired");
            if on() {
                counter!(JOBS_FAILED, "priority" => p, "model" => model.to_string(), "code" => code)
                    .increment(1);
            }
            // The line names the job and its trace itself: the span is there only when
            // `JOB_SPANS` is enabled for the logs.
            tracing::info!(parent: &self.span, id, trace_id, model, code, "job answered with an error");
        }
    }
}

/// One forward's span: linked to every job's span; records each job's wait in the
/// batcher. Ends (dropped) when the outputs are back, see [`Batch::done`].
pub(crate) struct Batch {
    span: Span,
    model: String,
    version: String,
}

impl Batch {
    /// Starts the span of a forward of `model` on `device` over the jobs of `traces`.
    pub fn start(model: &str, version: &str, device: &str, traces: &[&JobTrace]) -> Batch {
        let span = tracing::info_span!(
            parent: None,
            "worker.batch",
            "messaging.batch.message_count" = traces.len(),
            "jetinfer.model" = %model,
            "jetinfer.version" = %version,
            "jetinfer.device" = %device,
            "jetinfer.compute_ms" = tracing::field::Empty,
        );
        let now = SystemTime::now();
        for t in traces {
            let since = from_micros(t.waiting_since.load(Ordering::Relaxed));
            span.follows_from(&t.span);
            record_span("worker.queue", &t.span, || (since, now), &[]);
            if !on() {
                continue;
            }
            histogram!(
                BATCH_QUEUE_WAIT,
                "priority" => t.priority.as_str(),
                "model" => model.to_string(),
                "version" => version.to_string()
            )
            .record(now.duration_since(since).unwrap_or_default().as_secs_f64());
        }
        if on() {
            histogram!(BATCH_SIZE, "model" => model.to_string()).record(traces.len() as f64);
        }
        Batch {
            span,
            model: model.to_string(),
            version: version.to_string(),
        }
    }

    /// The forward finished in `compute_ms`.
    pub fn done(self, compute_ms: f64) {
        self.span.record("jetinfer.compute_ms", compute_ms);
        histogram!(FORWARD, "model" => self.model, "version" => self.version)
            .record(compute_ms / 1e3);
    }
}

/// One result write: its times, how many results it held, and whether it stored them.
pub(crate) struct Write {
    started: SystemTime,
    ended: SystemTime,
    jobs: usize,
    stored: bool,
}

/// Marks the start of a result write (the same call returns the start time).
pub(crate) fn write_started() -> SystemTime {
    SystemTime::now()
}

/// A write of `jobs` results that began at `started` ended (`stored`: the pipeline
/// succeeded); each job's trace then records it with [`JobTrace::written`].
pub(crate) fn write_ended(started: SystemTime, jobs: usize, stored: bool) -> Write {
    let ended = SystemTime::now();
    if on() {
        histogram!(RESULT_WRITE).record(
            ended
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64(),
        );
    }
    Write {
        started,
        ended,
        jobs,
        stored,
    }
}

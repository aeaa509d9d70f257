//! W3C trace context across processes, and spans with explicit times.
//!
//! A job's trace travels as a `traceparent` header on its JetStream message (set by the
//! client library's `otel` feature when it publishes, with `tracestate` when the producer's
//! context has one), then inside the dispatcher's run request (`RunJob.traceparent`, from
//! [`traceparent_of`] the dispatch span; [`tracestate_of`] gives the matching state), and
//! every process continues it with [`continue_trace`], or [`continue_trace_with_state`] to
//! keep the vendor entries of `tracestate` along the trace. When tracing is off (no OTLP endpoint, so no
//! OpenTelemetry layer) these functions find no span context and do nothing beyond
//! recording the producer's trace id on the job span for the logs.
//!
//! Queue waits (in JetStream, in the dispatcher's queues, in a batcher) are not code that
//! runs, so they have no tracing span to enter: [`record_span`] creates them after the
//! fact with start and end times, through the OpenTelemetry API directly.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanContext, TraceContextExt, Tracer};
use opentelemetry::Context;
/// Span attributes for [`record_span`] (re-exported so callers need no OpenTelemetry crate).
pub use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The OpenTelemetry context of a `traceparent` (and optional `tracestate`) value, when it
/// is well formed.
pub fn remote_context(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    let mut carrier = HashMap::new();
    carrier.insert(TRACEPARENT.to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_string(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` of a span context: `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The `traceparent` naming `span` as the parent, or `None` when spans are not exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format_traceparent(&sc))
}

/// The `tracestate` of `span`'s trace, or `None` when it is empty or spans are not
/// exported.
pub fn tracestate_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    let state = sc.trace_state().header();
    (sc.is_valid() && !state.is_empty()).then_some(state)
}

/// Makes `span` continue the producer's trace (call it before the span is first
/// entered), and records the trace id in the span's `trace_id` field (declare it as
/// `trace_id = tracing::field::Empty`) so every log line inside the span names the trace,
/// exported or not. Without a parent the span starts a trace of its own when exporting.
/// Drops any `tracestate`; [`continue_trace_with_state`] keeps it.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    continue_trace_with_state(span, traceparent, None);
}

/// [`continue_trace`], keeping the producer's `tracestate` (vendor entries) in the
/// continued context, so spans under `span` carry it and pass it on.
pub fn continue_trace_with_state(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    // A disabled span (see `JOB_SPANS`) has nobody to tell: skip parsing the context.
    if span.is_disabled() {
        return;
    }
    match traceparent.and_then(|tp| remote_context(tp, tracestate)) {
        Some(cx) => {
            let trace_id = cx.span().span_context().trace_id();
            // Fails only when no OpenTelemetry layer is installed: then the id is for logs.
            let _ = span.set_parent(cx);
            span.record("trace_id", tracing::field::display(trace_id));
        }
        None => {
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                span.record("trace_id", tracing::field::display(sc.trace_id()));
            }
        }
    }
}

/// Records a finished span named `name`, child of `parent`, that ran over `times()`
/// (start, end: e.g. a wait in a queue measured from timestamps). Does nothing when
/// `parent` is disabled or not exported. The times are a closure and the attributes a
/// slice, so a job path without tracing reads no clock and allocates nothing here (a clock
/// read is ~60-90 ns on the H100 host's VM, and the services made several per job:
/// docs/benchmarks.md, "The H100 host's profile").
pub fn record_span(
    name: &'static str,
    parent: &Span,
    times: impl FnOnce() -> (SystemTime, SystemTime),
    attributes: &[KeyValue],
) {
    if parent.is_disabled() {
        return;
    }
    let cx = parent.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let (start, end) = times();
    let tracer = opentelemetry::global::tracer(crate::TRACER_NAME);
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start.min(end))
        .with_attributes(attributes.iter().cloned())
        .start_with_context(&tracer, &cx);
    span.end_with_timestamp(end);
}

/// A Unix-milliseconds timestamp as a [`SystemTime`].
pub fn unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The wall-clock time at which a monotonic `since` was taken.
pub fn wall_time_of(since: std::time::Instant) -> SystemTime {
    SystemTime::now()
        .checked_sub(since.elapsed())
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote_context(tp, Some("k=v")).unwrap();
        let sc = cx.span().span_context().clone();
        assert_eq!(format_traceparent(&sc), tp);
        assert_eq!(sc.trace_state().header(), "k=v");
        assert!(remote_context("00-zz-00f067aa0ba902b7-01", None).is_none());
        assert!(remote_context("", None).is_none());
    }

    #[test]
    fn without_a_tracer_nothing_is_injected_but_the_trace_id_is_logged() {
        let span = tracing::info_span!("t", trace_id = tracing::field::Empty);
        continue_trace(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(tracestate_of(&span), None);
    }

    #[test]
    fn with_a_tracer_the_state_travels_with_the_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let kept = tracing::info_span!("kept", trace_id = tracing::field::Empty);
            continue_trace_with_state(&kept, Some(tp), Some("vendor=abc,other=1"));
            let child = kept.in_scope(|| tracing::info_span!("child"));
            assert_eq!(tracestate_of(&kept).as_deref(), Some("vendor=abc,other=1"));
            assert_eq!(tracestate_of(&child).as_deref(), Some("vendor=abc,other=1"));
            let next = traceparent_of(&child).unwrap();
            assert!(
                next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{next}"
            );

            let dropped = tracing::info_span!("dropped", trace_id = tracing::field::Empty);
            continue_trace(&dropped, Some(tp));
            assert_eq!(tracestate_of(&dropped), None);
            assert!(traceparent_of(&dropped).is_some());
        });
    }
}

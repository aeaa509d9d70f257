//! The producer side of a job's trace: the current span's W3C context (`traceparent`, and
//! `tracestate` when set) as NATS headers on the published job.

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes propagator fields into NATS headers.
struct HeaderInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only `traceparent` / `tracestate` with ASCII values it built,
        // which are valid header names and values (an invalid one would panic on insert).
        self.0.insert(key, value.as_str());
    }
}

/// Adds the current span's trace context to `headers`. Nothing is added when spans are not
/// exported (no OpenTelemetry layer, so the span has no valid context).
pub(crate) fn inject_current(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Records the span's own trace id in its `trace_id` field, so log lines inside it name the
/// trace the job starts.
pub(crate) fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_a_tracer_nothing_is_injected() {
        let span = tracing::info_span!("t");
        let mut headers = async_nats::HeaderMap::new();
        span.in_scope(|| super::inject_current(&mut headers));
        assert!(headers.get("traceparent").is_none());
    }
}

"""W3C trace context for a published job, when OpenTelemetry is installed and a span is
current: the job's spans in the dispatcher and the worker then join the caller's trace."""
from __future__ import annotations

from typing import Dict

try:
    from opentelemetry import propagate, trace
except ImportError:  # optional dependency: no trace context without it
    propagate = trace = None


def trace_headers() -> Dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty without one."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: Dict[str, str] = {}
    propagate.inject(carrier)
    return {k: carrier[k] for k in ("traceparent", "tracestate") if carrier.get(k)}

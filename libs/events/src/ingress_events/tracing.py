"""W3C trace context on events: one Ingress change is one trace across every service."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER = trace.get_tracer("ingress_events")


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the active span, empty when there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from_headers(headers: dict[str, str] | None) -> otel_context.Context:
    return _PROPAGATOR.extract(carrier=dict(headers or {}))

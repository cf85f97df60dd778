"""OpenTelemetry wiring. W3C trace context travels in NATS headers, so one trace spans
gateway → service. With no exporter configured the API's no-op tracer is used and the
hot path pays next to nothing."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

_tracer = trace.get_tracer("billing")


def configure(exporter: str, service_name: str) -> None:
    """Install an SDK tracer provider when an exporter is asked for ("console" or "otlp")."""
    if exporter in ("", "none"):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":  # needs opentelemetry-exporter-otlp installed by the operator
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ValueError(f"unknown BILLING_OTEL_EXPORTER {exporter!r}")
    trace.set_tracer_provider(provider)
    global _enabled
    _enabled = None


_enabled: bool | None = None


def tracing_enabled() -> bool:
    """Whether an SDK tracer provider is installed (looked up once: it is on the hot path)."""
    global _enabled
    if _enabled is None:
        _enabled = trace.get_tracer_provider().__class__.__name__ not in (
            "ProxyTracerProvider", "NoOpTracerProvider")
    return _enabled


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    propagate.inject(headers)
    return headers


def server_span(name: str, headers: Mapping[str, str] | None) -> AbstractContextManager:
    """A span continuing the caller's trace (from `traceparent`), or nothing when off."""
    if not tracing_enabled():
        return nullcontext()
    parent = propagate.extract(headers or {})
    return _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER)


def client_span(name: str) -> AbstractContextManager:
    if not tracing_enabled():
        return nullcontext()
    return _tracer.start_as_current_span(name, kind=SpanKind.CLIENT)


__all__ = ["configure", "inject_headers", "server_span", "client_span",
           "tracing_enabled"]

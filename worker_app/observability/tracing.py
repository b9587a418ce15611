"""OpenTelemetry: one trace from the web handler's enqueue to the worker's execution.

On only when ``OTEL_TRACES_EXPORTER`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` names an exporter;
otherwise nothing is instrumented and nothing costs. The Celery instrumentation carries the
context in the message headers (``traceparent``), so the worker's span is a descendant of the
span that published the job.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from worker_app.config import Settings, get_settings

logger = logging.getLogger(__name__)
_installed = False


def enabled(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    exporters = (settings.otel_traces_exporter or "").split(",")
    return bool(settings.otel_exporter_otlp_endpoint) or any(
        name in ("otlp", "console") for name in exporters
    )


def setup(settings: Settings | None = None) -> bool:
    """Install the tracer provider and the Celery instrumentation in this process, once.

    Call it in every process that publishes or runs tasks: the API, and each pool process
    after fork (``worker_process_init``). Returns whether tracing is on.
    """
    global _installed
    settings = settings or get_settings()
    if _installed or not enabled(settings):
        return _installed
    # Only when tracing is on: OpenTelemetry's SDK costs start-up time and memory otherwise.
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    exporters = (settings.otel_traces_exporter or "otlp").split(",")
    if "console" in exporters:
        # One JSON line per span on the real stderr (Celery redirects sys.stdout to its log).
        console = ConsoleSpanExporter(
            out=sys.__stderr__ or sys.stderr,
            formatter=lambda span: span.to_json(indent=None) + "\n",
        )
        provider.add_span_processor(SimpleSpanProcessor(console))
    if "otlp" in exporters or settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _installed = True
    logger.info("tracing on: %s", ",".join(exporters))
    return True


def instrument_api(api: Any) -> None:
    """Trace the API's requests, when tracing is on."""
    if setup():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(api, excluded_urls="health,ready,metrics")


def trace_id_of(headers: dict[str, Any] | None) -> str:
    """The trace id a message carries in its ``traceparent`` header ('' without one)."""
    parent = str((headers or {}).get("traceparent") or "")
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 else ""


def current_trace_id() -> str:
    """The trace id of the span active in this context ('' when tracing is off)."""
    if not _installed:
        return ""
    from opentelemetry import trace  # loaded by setup() already: tracing is on

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""

"""Logging, configured once from a dict: text in development, JSON otherwise.

Every line written while a task runs, from any logger, carries the job's task id, task name,
queue and attempt; they come from a ContextVar that the task signals set and clear.
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from celery.app.trace import LOG_FAILURE, LOG_RETRY
from pythonjsonlogger.core import RESERVED_ATTRS

from worker_app.config import Settings
from worker_app.observability.tracing import current_trace_id

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(job)s %(message)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@dataclass(frozen=True)
class JobContext:
    """The job whose code is running in this context."""

    task_id: str
    task_name: str
    queue: str
    attempt: int
    trace_id: str = ""


_current_job: ContextVar[JobContext | None] = ContextVar("worker_app_job", default=None)


def bind_job(job: JobContext) -> Token[JobContext | None]:
    """Mark ``job`` as the one running in this context (called on task prerun)."""
    return _current_job.set(job)


def clear_job() -> None:
    """Forget the running job (called on task postrun), so nothing leaks into the next one."""
    _current_job.set(None)


def current_job() -> JobContext | None:
    """The job running in this context, if any."""
    return _current_job.get()


class JobContextFilter(logging.Filter):
    """Adds the running job's fields to every record (``job`` is their text rendering)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _current_job.get()
        if job is None:
            record.job = ""
            trace_id = current_trace_id()
            if trace_id:
                record.trace_id = trace_id
            return True
        record.task_id = job.task_id
        record.task_name = job.task_name
        record.queue = job.queue
        record.attempt = job.attempt
        # The publisher's trace (from the message), else the trace the worker's span started.
        trace_id = job.trace_id or current_trace_id()
        record.trace_id = trace_id
        trace = f" trace={trace_id}" if trace_id else ""
        record.job = (
            f" [{job.task_name} {job.task_id} queue={job.queue} attempt={job.attempt}{trace}]"
        )
        return True


class CeleryDuplicates(logging.Filter):
    """Drops Celery's own retry and failure lines: worker_app logs each of those events once,
    with more (delay and bound, reason and attempts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "celery.app.trace":
            return True
        return record.msg not in (LOG_RETRY, LOG_FAILURE)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``dictConfig`` for ``settings``: one stderr handler for every logger."""
    level = (settings.log_level or "info").upper()
    formatter: dict[str, Any]
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FORMAT,
            "reserved_attrs": [*RESERVED_ATTRS, "job"],
            "rename_fields": {"levelname": "level", "name": "logger", "asctime": "time"},
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": JobContextFilter}, "once": {"()": CeleryDuplicates}},
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["once", "job"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # Celery's and kombu's chatter stays at INFO even when the app debugs.
        "loggers": {
            name: {"level": max(logging.INFO, logging.getLevelName(level))}
            for name in ("celery", "kombu", "amqp", "redis", "asyncio", "tornado")
        },
    }


def configure_logging(settings: Settings) -> None:
    """Install the logging configuration for this process."""
    logging.config.dictConfig(logging_config(settings))

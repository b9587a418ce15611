"""Signal receivers for logs, traces and job records: wiring only.

The worker's own receiver (its bounded shutdown) is in :mod:`worker_app.worker.consumer`.

Celery dispatches signals robustly: a receiver that raises is logged by Celery and the task
goes on.
"""

from __future__ import annotations

from typing import Any

import click
from celery.signals import (
    before_task_publish,
    celeryd_init,
    heartbeat_sent,
    import_modules,
    setup_logging,
    task_postrun,
    task_prerun,
    task_rejected,
    task_revoked,
    worker_process_init,
)

from worker_app import keys
from worker_app.broker.queues import check_worker_queues
from worker_app.config import get_settings
from worker_app.jobs import records
from worker_app.observability import lifecycle, tracing
from worker_app.observability.logs import JobContext, bind_job, clear_job, configure_logging
from worker_app.observability.tracing import trace_id_of
from worker_app.redis_client import check_sentinel, get_redis


@celeryd_init.connect
def _on_worker_init(options: dict[str, Any] | None = None, **_: Any) -> None:
    # Before the worker selects its queues or connects: an unknown -Q, Sentinels that do not
    # answer or know no such master are one line each, not a trace.
    check_worker_queues((options or {}).get("queues"))
    check_sentinel(get_settings())


@import_modules.connect
def _on_import_modules(**_: Any) -> None:
    # Flower (``celery -A worker_app flower``) loads the app's modules before it connects: the
    # same one line as the worker's for Sentinels that do not answer or know no such master.
    context = click.get_current_context(silent=True)
    if context is not None and context.info_name == "flower":
        check_sentinel(get_settings())


@setup_logging.connect
def _on_setup_logging(**_: Any) -> None:
    # Connecting here stops Celery from configuring the root logger itself.
    configure_logging(get_settings())


@task_prerun.connect
def _on_task_prerun(task_id: str, task: Any, **_: Any) -> None:
    request = task.request
    delivery = request.delivery_info or {}
    bind_job(
        JobContext(
            task_id=task_id,
            task_name=task.name,
            queue=str(delivery.get("routing_key") or ""),
            attempt=request.retries + 1,
            trace_id=trace_id_of(request.headers),
        )
    )
    lifecycle.started()


@task_postrun.connect
def _on_task_postrun(**_: Any) -> None:
    clear_job()


@before_task_publish.connect
def _on_publish(headers: dict[str, Any], routing_key: str = "", **_: Any) -> None:
    # The job record is written with the message itself (worker_app.broker.publish).
    lifecycle.published(headers, routing_key)


@task_rejected.connect
def _on_rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    lifecycle.rejected(message, exc)


@task_revoked.connect
def _on_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    # A job stopped by a cancel (revoke with terminate) ends cancelled, never failed.
    if request is not None and getattr(request, "id", None):
        records.store().finished(str(request.id), "cancelled")


@heartbeat_sent.connect
def _on_heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(getattr(sender, "eventer", None), "hostname", None) or "worker"

    get_redis().set(keys.WORKER + str(hostname), "1", ex=keys.WORKER_TTL)


@worker_process_init.connect
def _on_pool_process(**_: Any) -> None:
    # After fork: a tracer provider's exporter threads do not survive it.
    tracing.setup()

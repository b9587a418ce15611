"""Signal receivers: wiring only. Every ``connect`` of the app lives here.

Celery dispatches signals robustly: a receiver that raises is logged by Celery and the task
goes on.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_init, setup_logging, task_postrun, task_prerun

from worker_app.config import get_settings
from worker_app.logs import JobContext, bind_job, clear_job, configure_logging
from worker_app.queues import check_worker_queues


@celeryd_init.connect
def _on_worker_init(options: dict[str, Any] | None = None, **_: Any) -> None:
    # Before the worker selects its queues or connects: an unknown -Q is one line, not a trace.
    check_worker_queues((options or {}).get("queues"))


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
        )
    )


@task_postrun.connect
def _on_task_postrun(**_: Any) -> None:
    clear_job()

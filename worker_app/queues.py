"""Queue declarations: where a task goes, and refusing queues that are not configured."""

from __future__ import annotations

from typing import Any

from celery import current_app

from worker_app.config import get_settings
from worker_app.errors import UnknownQueue


def check_queue(queue: str) -> str:
    """Return ``queue`` when it is configured.

    Raises:
        UnknownQueue: the queue is not in ``ASYNQ_QUEUES``.
    """
    names = get_settings().queue_names
    if queue not in names:
        raise UnknownQueue(
            f"queue {queue!r} is not configured; configured queues: {', '.join(names)}"
        )
    return queue


def route_task(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Celery router: a task goes to the queue it declares (``queue_name``), also when sent by
    name; an explicit ``queue=`` on the call wins.

    Raises:
        UnknownQueue: the declared queue is not configured.
    """
    if task is None:
        task = current_app.tasks.get(name)
    queue = getattr(task, "queue_name", None)
    return {"queue": check_queue(queue)} if isinstance(queue, str) else None

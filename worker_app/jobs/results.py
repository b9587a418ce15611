"""Celery's result backend, answered from job records: nothing is written for it per task.

Every job already has a record that ends with its status and result
(:mod:`worker_app.jobs.records`), so Celery's Redis result backend would write the same outcome a
second time (a MULTI with SETEX and PUBLISH per task) and subscribe on every publish. This
backend stores nothing and reads the record:
``AsyncResult(id).state``, ``.get()`` and ``.ready()`` work as users expect (``get`` polls,
every ``interval`` seconds, 0.5 by default), results live as long as records do
(``ASYNQ_RETENTION``), and a requeued or retried job shows its new state, never a stale one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.backends.base import BaseBackend

from worker_app.jobs import records

#: Job record status -> Celery state.
STATES = {
    "pending": states.PENDING,
    "scheduled": states.PENDING,
    "active": states.STARTED,
    "retrying": states.RETRY,
    "succeeded": states.SUCCESS,
    "failed": states.FAILURE,
    "cancelled": states.REVOKED,
}


class JobRecordBackend(BaseBackend):
    """Reads task state and results from job records; writes nothing of its own."""

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.url = url or "jobrecords://"

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        # The task's own record already holds this outcome (written in the same script that
        # ends the job), so there is nothing to store.
        return result

    def _forget(self, task_id: str) -> None:
        # A requeue or retry resets the record itself; there is no separate result to drop.
        return None

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        job = records.store().get(str(task_id))
        meta: dict[str, Any] = {
            "task_id": task_id,
            "status": states.PENDING,
            "result": None,
            "traceback": None,
            "children": [],
        }
        if job is None:
            return meta
        state = STATES.get(job.status, states.PENDING)
        meta["status"] = state
        if state == states.SUCCESS:
            meta["result"] = job.result
        elif state in (states.FAILURE, states.RETRY, states.REVOKED):
            meta["result"] = _exception(job.last_error or job.status)
        if job.finished_at is not None:
            meta["date_done"] = datetime.fromtimestamp(job.finished_at, UTC).isoformat()
        return meta

    def _restore_group(self, group_id: str) -> None:
        return None


def _exception(error: str) -> dict[str, Any]:
    """Celery's serialized form of an exception, from a record's ``Type: message`` text."""
    kind, _, message = error.partition(": ")
    if not message or not kind.isidentifier():
        kind, message = "JobFailed", error
    return {"exc_type": kind, "exc_message": [message], "exc_module": "builtins"}

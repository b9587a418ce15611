"""``/api/dlq``: inspect, requeue, delete and purge dead-lettered jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from worker_app.api.errors import ApiError
from worker_app.api.schemas import (
    BulkOut,
    BulkRequeueIn,
    DlqEntryOut,
    DlqPageOut,
    RequeueIn,
    errors,
)
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import Reason

router = APIRouter(tags=["dead-letter queue"])
ACTOR = "api"
NOT_FOUND = errors(404)
NO_FILTER = errors(409)


def _entry(task_id: str) -> entries.Entry:
    entry = manage.get(task_id)
    if entry is None:
        raise ApiError(404, f"no dead-letter entry {task_id!r}")
    return entry


def _filter(
    task: str | None, reason: str | None, queue: str | None, fingerprint: str | None
) -> entries.Filter:
    return entries.Filter(task=task, reason=reason, queue=queue, fingerprint=fingerprint)


Text = Annotated[str | None, Query(max_length=200)]


@router.get("/dlq", response_model=DlqPageOut)
def list_entries(
    task: Text = None,
    reason: Reason | None = None,
    queue: Text = None,
    fingerprint: Text = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^\d+(\.\d+)?:.+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DlqPageOut:
    """Entries newest first, filtered; follow ``next_cursor``."""
    page = manage.list_entries(_filter(task, reason, queue, fingerprint), cursor, limit)
    return DlqPageOut(
        entries=[DlqEntryOut(**e.to_dict()) for e in page.entries], next_cursor=page.next_cursor
    )


@router.get("/dlq/stats")
def stats() -> dict[str, Any]:
    """Counts by reason, task and queue, and the distinct failures by fingerprint."""
    return manage.stats()


@router.get("/dlq/{task_id}", response_model=DlqEntryOut, responses=NOT_FOUND)
def show_entry(task_id: str) -> DlqEntryOut:
    """One entry with its traceback, arguments, headers and audit history."""
    entry = _entry(task_id)
    return DlqEntryOut(**entry.to_dict(), history=manage.history(task_id=task_id))


@router.post(
    "/dlq/requeue",
    response_model=BulkOut,
    status_code=202,
    responses=NO_FILTER,
)
def requeue_many(body: BulkRequeueIn) -> BulkOut:
    """Requeue every entry matching the filter (``all: true`` for every entry)."""
    flt = _filter(body.task, body.reason, body.queue, body.fingerprint)
    if not flt.given() and not body.all:
        raise ApiError(409, "give a filter (task, reason, queue, fingerprint) or all: true")
    result = manage.requeue_many(flt, actor=ACTOR, rate=body.rate)
    return BulkOut(
        done=result.done,
        refused=result.refused,
        total=result.total,
        stopped=result.stopped,
        unvalidated=result.unvalidated,
    )


@router.post("/dlq/{task_id}/requeue", response_model=BulkOut, status_code=202, responses=NOT_FOUND)
def requeue_one(task_id: str, body: RequeueIn | None = None) -> BulkOut:
    """Put the entry back on its queue (same id, attempts reset), optionally with a new payload.

    When the API's process does not have the task, the original message is published unchanged
    (``unvalidated: 1``); a new payload for such a task is refused (422).
    """
    _entry(task_id)
    requeued = manage.requeue(task_id, actor=ACTOR, payload=body.payload if body else None)
    if requeued is None:  # handled by someone else in between
        raise ApiError(404, f"no dead-letter entry {task_id!r}")
    return BulkOut(done=1, total=1, unvalidated=int(not requeued.validated))


@router.delete("/dlq/{task_id}", response_model=BulkOut, responses=NOT_FOUND)
def delete_entry(task_id: str) -> BulkOut:
    """Remove one entry for good."""
    _entry(task_id)
    return BulkOut(done=int(manage.delete(task_id, actor=ACTOR)))


@router.delete("/dlq", response_model=BulkOut, responses=NO_FILTER)
def purge(
    task: Text = None,
    reason: Reason | None = None,
    queue: Text = None,
    fingerprint: Text = None,
    all: bool = False,
) -> BulkOut:
    """Remove every entry matching the filter (``all=true`` for every entry)."""
    flt = _filter(task, reason, queue, fingerprint)
    if not flt.given() and not all:
        raise ApiError(409, "give a filter (task, reason, queue, fingerprint) or all=true")
    return BulkOut(done=manage.purge(flt, actor=ACTOR))

"""The console's pages: queues, jobs and dead letters, read through the stores' own queries."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from worker_app import keys
from worker_app.api.console.auth import Viewer, viewer
from worker_app.api.console.render import ConsoleError, render
from worker_app.api.routes.queues import workers_online
from worker_app.broker.queues import queue_stats
from worker_app.celery import app as celery_app
from worker_app.config import get_settings
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import DIMENSIONS
from worker_app.jobs import records
from worker_app.redis_client import get_redis

router = APIRouter()
Who = Depends(viewer)

PAGE_SIZES = (25, 50, 100, 200)
CURSOR = re.compile(r"^\d+(\.\d+)?:.{1,200}$")
TEXT_MAX = 200


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    if len(value) > TEXT_MAX:
        raise ConsoleError(422, f"{name} is longer than {TEXT_MAX} characters")
    return value or None


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = _text(request, name)
    if value is not None and value not in allowed:
        raise ConsoleError(422, f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _cursor(request: Request) -> str | None:
    value = _text(request, "cursor")
    if value is not None and not CURSOR.match(value):
        raise ConsoleError(422, "cursor is not one this console made; start from the first page")
    return value


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or int(raw) not in PAGE_SIZES:
        raise ConsoleError(422, f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    return int(raw)


def overview() -> dict[str, Any]:
    """What the queues page shows: every queue, the dead letters, jobs by status, workers."""
    client = get_redis()
    store = entries.store()
    rows = [
        {**q.as_dict(), "dead_letters": store.count(entries.Filter(queue=q.name))}
        for q in queue_stats(client)
    ]
    pipe = client.pipeline(transaction=False)
    for status in records.STATUSES:
        pipe.zcard(f"{keys.JOBS_BY}status:{status}")
    by_status = dict(zip(records.STATUSES, map(int, pipe.execute()), strict=True))
    return {
        "queues": rows,
        "dead_letters": store.count(),
        "by_status": by_status,
        "workers": workers_online(client),
        "now": time.time(),
    }


@router.get("/", response_class=HTMLResponse, name="queues")
def queues_page(request: Request, who: Viewer = Who) -> HTMLResponse:
    """Queues: depth, weight, share, dead letters and workers, refreshed while open."""
    return render(request, "queues.html", who, page="queues", **overview())


@router.get("/fragments/queues", response_class=HTMLResponse)
def queues_fragment(request: Request, who: Viewer = Who) -> HTMLResponse:
    """The live part of the queues page, fetched again every few seconds by console.js."""
    return render(request, "_queues_live.html", who, **overview())


def task_names() -> list[str]:
    """Task names this process knows, for the jobs filter's suggestions."""
    return sorted(name for name in celery_app.tasks if not name.startswith("celery."))


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, who: Viewer = Who) -> HTMLResponse:
    """Jobs newest first, filtered by status, type and queue, a page at a time."""
    status = _choice(request, "status", records.STATUSES)
    type_ = _text(request, "type")
    queue = _text(request, "queue")
    cursor = _cursor(request)
    limit = _limit(request)
    page = records.store().page(status=status, type=type_, queue=queue, cursor=cursor, limit=limit)
    return render(
        request,
        "jobs.html",
        who,
        page="jobs",
        jobs=page.jobs,
        next_cursor=page.next_cursor,
        filters={"status": status, "type": type_, "queue": queue, "limit": limit},
        first_page=cursor is None,
        statuses=records.STATUSES,
        task_names=task_names(),
        queue_names=get_settings().queue_names,
        now=time.time(),
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, who: Viewer = Who) -> HTMLResponse:
    """One job: status, attempts, timestamps, error, result and payload."""
    job = records.store().get(job_id)
    if job is None:
        raise ConsoleError(404, f"No job {job_id!r}: it was never enqueued, or its record expired.")
    return render(
        request,
        "job.html",
        who,
        page="jobs",
        job=job,
        final=job.status in records.FINAL,
        dead_letter=manage.get(job_id) is not None,
        now=time.time(),
    )


def _dlq_filter(request: Request) -> entries.Filter:
    return entries.Filter(
        task=_text(request, "task"),
        reason=_choice(request, "reason", entries.REASONS),
        queue=_text(request, "queue"),
        fingerprint=_text(request, "fingerprint"),
    )


def _counts(dimension: str, values: list[str]) -> dict[str, int]:
    """Entries per value of one filter dimension: the counts beside the filter's choices."""
    store = entries.store()
    counts = {}
    for value in values:
        fields: dict[str, Any] = {dimension: value}
        counts[value] = store.count(entries.Filter(**fields))
    return counts


@router.get("/dlq", response_class=HTMLResponse)
def dlq_page(request: Request, who: Viewer = Who) -> HTMLResponse:
    """Dead letters newest first, filtered by reason, task and queue, with bulk actions."""
    flt = _dlq_filter(request)
    cursor = _cursor(request)
    limit = _limit(request)
    page = manage.list_entries(flt, cursor, limit)
    store = entries.store()
    given = flt.given()
    return render(
        request,
        "dlq.html",
        who,
        page="dlq",
        entries=page.entries,
        next_cursor=page.next_cursor,
        filters={**{name: getattr(flt, name) for name in DIMENSIONS}, "limit": limit},
        first_page=cursor is None,
        # The store counts one dimension at a time: a total is exact with at most one filter.
        matching=store.count(flt) if len(given) <= 1 else None,
        total=store.count(),
        reasons=_counts("reason", list(entries.REASONS)),
        tasks=_counts("task", store.values("task")),
        queues=_counts("queue", store.values("queue")),
    )


@router.get("/dlq/{task_id}", response_class=HTMLResponse)
def entry_page(request: Request, task_id: str, who: Viewer = Who) -> HTMLResponse:
    """One dead letter: error, traceback, arguments, headers and its audit history."""
    entry = manage.get(task_id)
    if entry is None:
        raise ConsoleError(
            404, f"No dead-letter entry {task_id!r}: it was requeued, deleted or trimmed."
        )
    return render(
        request,
        "dlq_entry.html",
        who,
        page="dlq",
        entry=entry,
        history=manage.history(task_id=task_id),
        job_known=records.store().get(task_id) is not None,
    )

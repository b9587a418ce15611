"""``/api/jobs``: enqueue, list, get, cancel and retry jobs."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Query

from worker_app.api.errors import ApiError
from worker_app.api.schemas import JobIn, JobPageOut, errors
from worker_app.celery import app as celery_app
from worker_app.celery import get_task
from worker_app.dlq import manage
from worker_app.jobs import records
from worker_app.jobs.records import Status
from worker_app.producer.client import submit

router = APIRouter(tags=["jobs"])
#: Seconds an active job gets to stop by itself (``is_cancelled()``) before it is terminated.
CANCEL_GRACE = 2.0
RESPONSES = errors(404, 409)


def _job(job_id: str) -> records.Job:
    job = records.store().get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}")
    return job


@router.post("/jobs", status_code=202, response_model=records.Job, responses=errors(409, 422))
def create_job(body: JobIn) -> records.Job:
    """Validate the payload against the task's model and enqueue the job. With ``unique_for``,
    an equal job already enqueued within that window answers 409 with its ``job_id``."""
    done = submit(
        body.type, body.payload, queue=body.queue, countdown=body.delay, unique_for=body.unique_for
    )
    if not done.created or done.job is None:
        raise ApiError(409, "an equal job is already enqueued", job_id=done.job_id)
    return done.job  # as the publish wrote it: no second read


@router.get("/jobs", response_model=JobPageOut)
def list_jobs(
    status: Status | None = None,
    type: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^\d+(\.\d+)?:.+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPageOut:
    """Jobs newest first, filtered by status, type and queue; follow ``next_cursor``."""
    page = records.store().page(status=status, type=type, queue=queue, cursor=cursor, limit=limit)
    return JobPageOut(jobs=page.jobs, next_cursor=page.next_cursor)


@router.get("/jobs/{job_id}", response_model=records.Job, responses=RESPONSES)
def get_job(job_id: str) -> records.Job:
    """One job; 404 when it was never enqueued (or its record expired)."""
    return _job(job_id)


@router.delete("/jobs/{job_id}", status_code=202, response_model=records.Job, responses=RESPONSES)
def cancel_job(job_id: str) -> records.Job:
    """Cancel: a waiting job never runs; an active one is asked to stop, then terminated."""
    before = _job(job_id).status
    if before in records.FINAL:
        raise ApiError(
            409, f"job {job_id} is {before}; only waiting or active jobs can be cancelled"
        )
    if records.store().cancel(job_id) == "active":
        timer = threading.Timer(CANCEL_GRACE, _terminate_if_active, args=(job_id,))
        timer.daemon = True
        timer.start()
    return _job(job_id)


def _terminate_if_active(job_id: str) -> None:
    job = records.store().get(job_id)
    if job is not None and job.status == "active":
        celery_app.control.revoke(job_id, terminate=True, signal="SIGTERM")


@router.post(
    "/jobs/{job_id}/retry", status_code=202, response_model=records.Job, responses=RESPONSES
)
def retry_job(job_id: str) -> records.Job:
    """Run a failed (dead-lettered) or cancelled job again, under the same id."""
    job = _job(job_id)
    if job.status not in ("failed", "cancelled"):
        raise ApiError(
            409, f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried"
        )
    if manage.get(job_id) is not None:
        manage.requeue(job_id, actor="api")
    else:
        task = get_task(job.type)
        task.backend.forget(job_id)
        payload = job.payload or {}
        task.apply_async(
            tuple(payload.get("args") or ()),
            payload.get("kwargs") or {},
            task_id=job_id,
            queue=job.queue,
        )
    return _job(job_id)

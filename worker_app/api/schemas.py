"""Request and response bodies of the job API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker_app.broker.queues import QueueStats
from worker_app.dlq.entries import Reason
from worker_app.jobs.records import Job


class ErrorOut(BaseModel):
    """Every error answer: a message, and the field errors of a 422."""

    error: str
    errors: list[str] = Field(default_factory=list)
    job_id: str | None = Field(None, description="The equal job already enqueued (409)")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with :class:`ErrorOut` bodies."""
    text = {
        401: "Missing or wrong bearer token",
        404: "No such id",
        409: "Not allowed in this state",
        422: "Invalid input",
        503: "Redis is unreachable",
    }
    return {status: {"model": ErrorOut, "description": text[status]} for status in statuses}


class JobIn(BaseModel):
    """A job to enqueue."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, max_length=200, description="Task name, e.g. briefing.generate")
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, min_length=1, max_length=64)
    delay: float | None = Field(None, ge=0, le=365 * 86400, description="Seconds before it may run")
    unique_for: float | None = Field(
        None, gt=0, le=30 * 86400, description="Seconds in which an equal job is not enqueued again"
    )


class JobPageOut(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class DlqEntryOut(BaseModel):  # type: ignore[no-redef]  # its field "kwargs" meets the plugin's __init__
    task_id: str
    task_name: str
    reason: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    headers: dict[str, Any]
    exc_type: str
    exc_message: str
    traceback: str
    attempts: int
    first_enqueued_at: float | None
    failed_at: float
    hostname: str
    raw: str | None
    content_type: str | None
    fingerprint: str
    history: list[dict[str, Any]] = Field(default_factory=list)


class DlqPageOut(BaseModel):
    entries: list[DlqEntryOut]
    next_cursor: str | None


class RequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload: dict[str, Any] | None = Field(
        None, description="Replace the payload (validated; needs the task in the API's process)"
    )


class BulkRequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    reason: Reason | None = None
    queue: str | None = None
    fingerprint: str | None = None
    all: bool = Field(False, description="Requeue every entry when no filter is given")
    rate: float | None = Field(None, gt=0, le=10_000, description="At most this many per second")


class BulkOut(BaseModel):
    done: int
    refused: int = 0
    total: int | None = Field(None, description="Entries matched (requeue)")
    stopped: str | None = Field(
        None, description="Why a requeue ended before the last entry; the rest stay dead-lettered"
    )
    unvalidated: int = Field(
        0,
        description="Published unchanged, payload not validated: the API does not have the task",
    )


@dataclass(frozen=True)
class QueueOut(QueueStats):
    """A queue as :func:`~worker_app.broker.queues.queue_stats` sees it, with its dead letters."""

    dead_letters: int = 0


class QueuesOut(BaseModel):
    queues: list[QueueOut]
    dead_letters: int
    workers: list[str]

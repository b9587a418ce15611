"""One error tree for worker_app: what a task raises decides what happens to its job.

Any exception a task raises is retried with backoff unless it is a :class:`PermanentError`;
a :class:`Deferred` runs the job again later without using up a retry.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError


class WorkerAppError(Exception):
    """Root of every error worker_app raises."""


class TaskError(WorkerAppError):
    """Base of the errors a task raises to say what should happen to its job."""


class RetryableError(TaskError):
    """A transient failure: retried with capped exponential backoff (the default for any error)."""


class PermanentError(TaskError):
    """A failure that retrying cannot fix: no retries, the job goes to the failure handler."""


class PoisonPill(PermanentError):
    """Running the job killed its pool process too many times in a row."""


class InvalidPayload(PermanentError):
    """The payload does not match the task's model; ``errors`` lists the field errors."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class PayloadTooLarge(InvalidPayload):
    """The job's message is larger than ``ASYNQ_MAX_PAYLOAD``: refused, nothing was written."""


class Cancelled(TaskError):
    """The job was cancelled while it ran.

    Raised by :func:`worker_app.jobs.records.check_cancelled`.
    """


class Deferred(TaskError):
    """The job cannot run now; run it again after ``delay`` seconds without using a retry."""

    def __init__(self, message: str = "deferred", delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class RateLimited(Deferred):
    """The task's rate limit is used up; the job is deferred until a token is due."""


class TooManyJobs(Deferred):
    """Too many jobs of the same key are running; the job is deferred."""


class EnqueueError(WorkerAppError):
    """A job was refused before anything was published."""


class UnknownQueue(EnqueueError):
    """The job names a queue that is not configured in ASYNQ_QUEUES."""


class UnknownTask(EnqueueError):
    """The job names a task that is not registered."""


class BrokerUnavailable(EnqueueError, OperationalError):
    """Redis did not take the job after a few quick tries; nothing was published."""


class UnsafeSerializer(EnqueueError):
    """The job asks for a serializer other than JSON."""


class OutboxUnavailable(EnqueueError):
    """The transactional outbox cannot be used: extra not installed, no database, bad handle."""

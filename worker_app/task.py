"""The base task: payload validation, retries with full-jitter backoff, and failure routing.

Every task of the app uses it (``task_cls``), so plain ``@app.task`` functions get the same
contract: any exception retries with ``random(0, min(max, base * 2**attempt))`` seconds of delay
up to the retry limit; a :class:`PermanentError` (an invalid payload included) goes straight to
the failure handler; a :class:`Deferred` runs again later without using up a retry.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from worker_app import keys
from worker_app.broker.leases import LEASES, RECEIVED_FIELD
from worker_app.broker.publish import publish_once
from worker_app.broker.queues import check_queue
from worker_app.config import get_settings
from worker_app.dlq.capture import entry_for, handle_failure
from worker_app.errors import (
    BrokerUnavailable,
    Cancelled,
    Deferred,
    PermanentError,
    RateLimited,
    TooManyJobs,
    UnsafeSerializer,
)
from worker_app.flow import concurrency, ratelimit
from worker_app.jobs import records, waits
from worker_app.jobs.payload import validate_payload
from worker_app.producer import send

logger = logging.getLogger(__name__)

# Celery's own control flow passes through untouched.
_CONTROL = (Retry, Ignore, Reject)


def _seconds(value: timedelta | float | None, default: timedelta) -> float:
    if value is None:
        return default.total_seconds()
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _queue(request: Any) -> str:
    return str((request.delivery_info or {}).get("routing_key") or "")


def backoff_bound(attempt: int, base: float, cap: float) -> float:
    """The largest delay before retry number ``attempt + 1``: ``min(cap, base * 2**attempt)``."""
    return min(cap, base * 2.0**attempt)


class BaseTask(Task[Any, Any]):
    """The task contract of worker_app; per-task overrides are class attributes."""

    #: The worker-side request: counts pool-process deaths, retries hard time limits.
    Request = "worker_app.worker.request:Request"
    #: The queue this task goes to unless the call names one; None means the default queue.
    queue_name: str | None = None
    #: Pydantic model of the payload; the task function then receives one instance of it.
    payload_model: type[BaseModel] | None = None
    #: Retries after the first attempt; None means ``ASYNQ_MAX_RETRY``.
    max_retries: int | None = None
    #: Rate across all workers, e.g. ``"100/m"``; over it, jobs are deferred (no retry used).
    global_rate_limit: str | None = None
    #: Payload field whose value groups jobs for ``concurrency_limit`` (e.g. ``"org_id"``).
    concurrency_key: str | None = None
    #: At most this many jobs of one ``concurrency_key`` value run at once, across all workers.
    concurrency_limit: int | None = None
    #: Base and cap of the backoff; None means ``ASYNQ_RETRY_BACKOFF`` / ``_MAX``.
    backoff: timedelta | float | None = None
    backoff_max: timedelta | float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.payload_model is not None:
            # The model checks the arguments; Celery's signature check would reject its fields.
            cls.typing = False
        if cls.global_rate_limit is not None:
            ratelimit.parse_rate(cls.global_rate_limit)  # a typo fails at import, not per job

    def retry_limit(self) -> int:
        """Retries this task gets after its first attempt."""
        return get_settings().max_retry if self.max_retries is None else self.max_retries

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``retry``, always bounded and with the product's backoff.

        Celery reads ``max_retries=None`` as "retry forever" and waits
        ``default_retry_delay`` (3 minutes) when no delay is given. Here a task's own
        ``self.retry()`` and ``autoretry_for`` obey ``ASYNQ_MAX_RETRY`` (or the task's
        ``max_retries``) and the full-jitter backoff, and end in the dead-letter queue.
        """
        if max_retries is None:
            max_retries = self.retry_limit()
        if countdown is None and eta is None:
            countdown, _ = self.retry_delay(int(self.request.retries or 0))
        return super().retry(
            args, kwargs, exc, throw, eta, countdown, max_retries=max_retries, **options
        )

    def retry_delay(self, attempt: int) -> tuple[float, float]:
        """A full-jitter delay before retry ``attempt + 1``, and the bound it was drawn under."""
        settings = get_settings()
        base = _seconds(self.backoff, settings.retry_backoff)
        cap = _seconds(self.backoff_max, settings.retry_backoff_max)
        bound = backoff_bound(attempt, base, cap)
        return random.uniform(0.0, bound), bound

    def apply_async(  # type: ignore[override]
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Publish the task after checking its serializer, queue and payload.

        Raises:
            UnsafeSerializer: a serializer other than JSON was asked for.
            UnknownQueue: the queue is not configured.
            InvalidPayload: the payload does not match ``payload_model``; nothing is published.
        """
        serializer = options.get("serializer")
        if serializer not in (None, "json"):
            raise UnsafeSerializer(f"serializer {serializer!r} refused: only json is accepted")
        queue = options.get("queue")
        if isinstance(queue, str):
            check_queue(queue)
        if self.payload_model is not None:
            payload = validate_payload(self.payload_model, args or (), kwargs or {})
            args, kwargs = (), payload.model_dump(mode="json")
        # The queues exist as soon as a message is pushed: no declaration per publish (kombu's
        # copies and binds the queue entity each time, a fifth of a publish's cost).
        options.setdefault("declare", [])
        headers = options["headers"] = dict(options.get("headers") or {})
        headers.setdefault(keys.FIRST_ENQUEUED_AT, time.time())
        if send.served(self, options):
            return send.send(self, args, kwargs, task_id, options)
        try:
            return super().apply_async(args, kwargs, task_id, **options)
        except OperationalError as exc:
            raise BrokerUnavailable(
                f"could not publish {self.name}: Redis unreachable ({exc})"
            ) from exc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)
        received_at = getattr(self.request, RECEIVED_FIELD, None)
        if received_at is not None and not LEASES.may_start(received_at):
            # Handed to this pool process before a gap in the worker's lease renewals (the pool
            # was busy, the main loop blocked): another worker may have taken it back and run it.
            logger.warning("not started: its lease may have lapsed meanwhile; given back")
            raise Reject("its lease may have lapsed", requeue=True)
        return self._execute(args, kwargs)

    def _execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        request = self.request
        job_id = str(request.id)
        job_store = records.store()
        # A job is marked active (or refused: cancelled, a publish-once repeat) by the worker's
        # fetch that holds its message, and its success is recorded with the ack
        # (worker_app.broker.fetch). A message with an ETA waits in the worker until due, so its
        # job starts here, when it really starts: one round trip that also says whether it was
        # cancelled meanwhile or repeats a publish-once job that already ran or is running.
        if request.eta:
            self._start_when_due(job_store, job_id)
        try:
            if self.global_rate_limit is not None:
                wait = ratelimit.wait_for_token(self.name, self.global_rate_limit)
                if wait > 0:
                    raise RateLimited(f"rate limit {self.global_rate_limit} reached", delay=wait)
            if self.payload_model is not None:
                args, kwargs = (validate_payload(self.payload_model, args, kwargs),), {}
            slot = self._take_slot(job_id, args, kwargs)
            try:
                result = self.run(*args, **kwargs)
            finally:
                if slot is not None:
                    concurrency.release(slot, job_id)
        except Cancelled:
            job_store.finished(job_id, "cancelled")
            logger.info("stopped: the job was cancelled while it ran")
            raise Ignore() from None
        except (*_CONTROL, PermanentError):
            raise
        except Deferred as exc:
            raise self._defer(exc) from exc
        except Exception as exc:
            attempt = self.request.retries
            if attempt >= self.retry_limit():
                raise
            delay, bound = self.retry_delay(attempt)
            job_store.note_error(job_id, f"{type(exc).__name__}: {exc}")
            logger.warning(
                "retrying in %.3fs (attempt %d of %d, bound %.3fs): %s: %s",
                delay,
                attempt + 1,
                self.retry_limit() + 1,
                bound,
                type(exc).__name__,
                exc,
            )
            raise self.retry(exc=exc, countdown=delay, max_retries=self.retry_limit()) from exc
        if result is not None:
            job_store.keep_result(job_id, records.result_json(result))
        return result

    def _start_when_due(self, job_store: records.JobStore, job_id: str) -> None:
        """Mark a job that waited for its ETA active now.

        Raises:
            Ignore: it was cancelled meanwhile, or repeats a publish-once job that ran.
        """
        request = self.request
        headers = dict(request.headers or {})
        headers["eta"] = request.eta if isinstance(request.eta, str) else str(request.eta)
        before = job_store.started(
            job_id,
            request.retries + 1,
            str(request.hostname or ""),
            _queue(request),
            waits.waited(headers),
            once=publish_once(request.headers, request.retries),
            redelivered=bool((request.delivery_info or {}).get("redelivered")),
        )
        if before == "cancelled":
            logger.info("not run: the job was cancelled before it started")
            raise Ignore()
        if before == "duplicate":
            logger.info("duplicate delivery, not run")
            raise Ignore()

    def _take_slot(self, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Hold a per-key slot for this run, or defer the job when the key is at its limit."""
        if self.concurrency_key is None or self.concurrency_limit is None:
            return None
        if len(args) == 1 and isinstance(args[0], BaseModel):
            value = getattr(args[0], self.concurrency_key, None)
        else:  # plain arguments, passed by position or by name
            bound = inspect.signature(self.run).bind_partial(*args, **kwargs).arguments
            value = bound.get(self.concurrency_key)
        slot = concurrency.slot_key(self.name, value)
        limits = self.request.timelimit or (None, None)
        lease = float(limits[0] or get_settings().task_timeout.total_seconds()) + 5.0
        if not concurrency.acquire(slot, job_id, self.concurrency_limit, lease):
            raise TooManyJobs(
                f"{self.concurrency_limit} jobs of {self.concurrency_key}={value} already running",
                delay=concurrency.recheck_delay(),
            )
        return slot

    def _defer(self, exc: Deferred) -> Retry:
        """Publish the job again after ``exc.delay`` with its attempt count unchanged."""
        request = self.request
        sig = self.signature_from_request(request, countdown=exc.delay, retries=request.retries)
        # The deferred run must happen: it is no publish-once repeat.
        headers = {k: v for k, v in (request.headers or {}).items() if k != keys.PUBLISH_ONCE}
        sig.apply_async(headers={**headers, keys.DEFERRED: "1"})
        logger.info("deferred for %.3fs without using a retry: %s", exc.delay, exc)
        return Retry(str(exc), exc, when=exc.delay, sig=sig)  # type: ignore[arg-type]  # float is Real

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Dead-letter a job that ends failed when it ran eagerly. In a worker, its main
        process does it before the message is acked (:mod:`worker_app.worker.request`)."""
        request = self.request
        if not request.is_eager:
            return
        traceback = str(einfo) if einfo is not None else ""
        handle_failure(entry_for(self.name, self.queue_name or "", request, exc, traceback))

"""The worker-side request of every task: success ends the job record with the ack, a failure
is dead-lettered before the ack, deaths are told apart from requeues, and hard time limits are
retried.

A job that succeeded is marked so in the same call that releases its message (the worker's
fetch script, worker_app.broker.fetch), so a success costs the pool process no round trip (one,
to keep the result, when the task returned something).
A job that failed is dead-lettered by this (the main) process in the same step that releases its
message, and only then acked (worker_app.dlq.capture).
A pool process that died running the job (killed, crashed) puts the message back as a *death* of
the job; a requeue by this worker's own shutdown or a cancel is none. The fetch dead-letters a
job whose runs died ``POISON_DEATHS`` times in a row instead of running it again.
When the pool kills an attempt for exceeding the hard time limit, vanilla Celery marks the job
failed at once; here it is retried with the usual backoff and dead-lettered once retries run out.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from billiard.exceptions import WorkerLostError
from celery.exceptions import (
    Ignore,
    Reject,
    Retry,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
)
from celery.worker import state
from celery.worker.request import Request as CeleryRequest
from celery.worker.state import task_ready

from worker_app.broker.leases import ASKED_FIELD, LEASES, RECEIVED_FIELD
from worker_app.dlq.capture import dead_letter_then_ack, entry_for
from worker_app.worker import shutdown
from worker_app.worker.stats import COUNTERS

logger = logging.getLogger(__name__)


class GivenBack(TaskRevokedError):
    """A request given back instead of handed to the pool. Raised to Celery's worker, which
    frees the pool slot it took for the request (as for a revoked one) and goes on."""


class Request(CeleryRequest):
    """Celery's request, with hard time limits retried."""

    # Set by Celery; declared for the type checker (the task is a worker_app BaseTask).
    _context: Any
    _message: Any
    _already_cancelled: bool
    _already_revoked: bool
    task: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Celery's strategy subclasses the request per task with a fast on_success and
        # execute_using_pool of its own (they do not call ours): wrap them so the result
        # reaches the ack and a request is checked before it reaches the pool.
        super().__init_subclass__(**kwargs)
        fast = cls.__dict__.get("on_success")
        if fast is not None:

            def on_success(self: Request, failed__retval__runtime: Any, **kw: Any) -> Any:
                self._note_success(failed__retval__runtime)
                return fast(self, failed__retval__runtime, **kw)

            cls.on_success = on_success  # type: ignore[method-assign]
        execute = cls.__dict__.get("execute_using_pool")
        if execute is not None:

            def execute_using_pool(self: Request, pool: Any, **kw: Any) -> Any:
                self._check_execute()
                return execute(self, pool, **kw)

            cls.execute_using_pool = execute_using_pool  # type: ignore[method-assign]

    def _note_success(self, failed__retval__runtime: Any) -> None:
        if not failed__retval__runtime[0] and self._message is not None:
            self._message.job_succeeded = self.id

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        self._note_success(failed__retval__runtime)
        return super().on_success(failed__retval__runtime, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: When this worker asked for the message (monotonic): its lease began no earlier.
        now = time.monotonic()
        asked = (getattr(self._message, "delivery_info", None) or {}).get(ASKED_FIELD)
        self.received_at = min(asked, now) if isinstance(asked, float) else now

    def execute_using_pool(self, pool: Any, **kwargs: Any) -> Any:
        self._check_execute()
        return super().execute_using_pool(pool, **kwargs)

    def _check_execute(self) -> None:
        """Raises :class:`GivenBack` when the request must not reach the pool (given back)."""
        if not self._may_execute():
            raise GivenBack(self.id)

    def _may_execute(self) -> bool:
        """Whether to hand the request to the pool now; if not, it was given back."""
        if shutdown.stopping():
            # Reaches the pool after the worker began to stop (its ETA came due): given back.
            task_ready(self)
            self.reject(requeue=True)
            return False
        if not LEASES.may_start(self.received_at):
            # Held across a gap in this worker's lease renewals (cut off from Redis): another
            # worker may have taken it back and run it. Given back, not started.
            logger.warning("not started: its lease may have lapsed meanwhile; given back")
            task_ready(self)
            self.reject(requeue=True)
            return False
        # The pool process checks again before the job runs (worker_app.broker.leases).
        self.request_dict[RECEIVED_FIELD] = self.received_at
        return True

    def on_accepted(self, pid: str, time_accepted: float) -> None:
        super().on_accepted(pid, time_accepted)
        # Marked in Redis so that a lost worker's lease recovered for it counts a death.
        message = self._message
        started = getattr(getattr(getattr(message, "channel", None), "qos", None), "started", None)
        if started is not None:
            try:
                started(message.delivery_tag, self.id)
            except Exception:  # noqa: BLE001 - a start not marked only weakens poison detection
                logger.exception("start of %s not marked", self.id)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, Retry):
            COUNTERS.retried += 1
        elif isinstance(exc, Ignore | Terminated):
            COUNTERS.cancelled += 1
        elif isinstance(exc, WorkerLostError | Reject | SystemExit | KeyboardInterrupt):
            if not isinstance(exc, Reject) and self._died_running():
                self._message.died = True  # its requeue counts a death of the job
            COUNTERS.requeued += 1
        elif not isinstance(exc, MemoryError | TimeLimitExceeded):  # on_timeout's
            COUNTERS.failed += 1
            COUNTERS.dead_lettered += 1
            # Dead-lettered before Celery acks the message: never acked without its entry.
            entry = entry_for(
                self.task.name, self.task.queue_name or "", self._context, exc, exc_info.traceback
            )
            task_ready(self)
            dead_letter_then_ack(
                self._message,
                entry,
                lambda: CeleryRequest.on_failure(self, exc_info, send_failed_event, return_ok),
            )
            return None
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _died_running(self) -> bool:
        """Whether this job's pool process died on its own (not stopped by this worker)."""
        return not (
            self._already_cancelled or self._already_revoked or state.should_terminate is not None
        )

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            return super().on_timeout(soft, timeout)
        retries = int(self._context.retries or 0)
        limit = self.task.retry_limit()
        if retries >= limit:
            COUNTERS.failed += 1
            COUNTERS.dead_lettered += 1
            # Exhausted: dead-lettered before Celery marks the failure and acks the message.
            exc = TimeLimitExceeded(timeout)
            entry = entry_for(self.task.name, self.task.queue_name or "", self._context, exc, "")
            task_ready(self)
            dead_letter_then_ack(self._message, entry, lambda: self._time_out(soft, timeout))
            return None
        task_ready(self)
        COUNTERS.retried += 1
        delay, bound = self.task.retry_delay(retries)
        exc = TimeLimitExceeded(timeout)
        self.task.signature_from_request(
            self._context, countdown=delay, retries=retries + 1
        ).apply_async()
        self.task.backend.mark_as_retry(self.id, exc, request=self._context)
        self.acknowledge()
        logger.warning(
            "hard time limit (%ss) exceeded for %s[%s]; "
            "retrying in %.3fs (attempt %d of %d, bound %.3fs)",
            timeout,
            self.task_name,
            self.id,
            delay,
            retries + 1,
            limit + 1,
            bound,
        )
        return None

    def _time_out(self, soft: bool, timeout: float) -> None:
        """Celery's own handling of an exhausted hard time limit: mark, hooks, ack."""
        self.task.request_stack.push(self._context)
        try:
            super().on_timeout(soft, timeout)
        finally:
            self.task.request_stack.pop()

"""The worker-side request of every task: success ends the job record with the ack, and hard
time limits are retried.

A job that succeeded is marked so in the same call that releases its message (the worker's
fetch script, worker_app.broker.fetch), so a success costs the pool process no round trip (one,
to keep the result, when the task returned something).
When the pool kills an attempt for exceeding the hard time limit, vanilla Celery marks the job
failed at once; here it is retried with the usual backoff and dead-lettered once retries run out.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]
from billiard.exceptions import WorkerLostError
from celery.exceptions import Ignore, Reject, Retry, Terminated, TimeLimitExceeded
from celery.worker.request import Request as CeleryRequest
from celery.worker.state import task_ready

from worker_app import keys
from worker_app.redis_client import get_redis
from worker_app.stats import COUNTERS

logger = logging.getLogger(__name__)


class Request(CeleryRequest):
    """Celery's request, with hard time limits retried."""

    # Set by Celery; declared for the type checker (the task is a worker_app BaseTask).
    _context: Any
    _message: Any
    task: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Celery's strategy subclasses the request per task with a fast on_success of its own
        # (it does not call ours): wrap it so the result reaches the ack.
        super().__init_subclass__(**kwargs)
        fast = cls.__dict__.get("on_success")
        if fast is not None:

            def on_success(self: Request, failed__retval__runtime: Any, **kw: Any) -> Any:
                self._note_success(failed__retval__runtime)
                return fast(self, failed__retval__runtime, **kw)

            cls.on_success = on_success  # type: ignore[method-assign]

    def _note_success(self, failed__retval__runtime: Any) -> None:
        if not failed__retval__runtime[0] and self._message is not None:
            self._message.job_succeeded = self.id

    def on_success(self, failed__retval__runtime: Any, **kwargs: Any) -> Any:
        self._note_success(failed__retval__runtime)
        return super().on_success(failed__retval__runtime, **kwargs)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = exc_info.exception
        exc = exc.exc if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, Retry):
            COUNTERS.retried += 1
        elif isinstance(exc, Ignore | Terminated):
            COUNTERS.cancelled += 1
        elif isinstance(exc, WorkerLostError | Reject):  # back on the queue
            COUNTERS.requeued += 1
        else:
            COUNTERS.failed += 1
            COUNTERS.dead_lettered += 1
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            return super().on_timeout(soft, timeout)
        retries = int(self._context.retries or 0)
        limit = self.task.retry_limit()
        if retries >= limit:
            COUNTERS.failed += 1
            COUNTERS.dead_lettered += 1
            # Exhausted: Celery marks the failure and calls on_failure, which dead-letters it.
            self.task.request_stack.push(self._context)
            try:
                return super().on_timeout(soft, timeout)
            finally:
                self.task.request_stack.pop()
        task_ready(self)
        COUNTERS.retried += 1
        # The pool killed it for its time, not because it crashed: not a poison-pill death.
        get_redis().delete(keys.DEATHS + self.id)
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

"""Bounded graceful shutdown on SIGTERM and SIGINT, inside the orchestrator's grace.

Celery's SIGTERM is a warm shutdown that waits for running tasks without limit, and its cold
shutdown sleeps out the whole soft timeout with the event loop stopped. Here the first SIGTERM
(or Ctrl-C), within one turn of the event loop:

1. stops fetching;
2. gives back every message the worker holds but has not started (jobs waiting for a pool
   process, a job whose ETA comes due meanwhile): another worker starts them at once;
3. lets running tasks finish, and exits as soon as none is left, at most until
   ``ASYNQ_SHUTDOWN_TIMEOUT`` minus :func:`margin`;
4. then stops the tasks still running, puts their messages back and exits 0 — the whole
   shutdown within ``ASYNQ_SHUTDOWN_TIMEOUT``.

A second signal skips the rest of the wait. The orchestrator's grace must be at least
``ASYNQ_SHUTDOWN_TIMEOUT`` + 5 s (Kubernetes' default 30 s fits the default 25 s).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import platforms
from celery.platforms import EX_OK
from celery.worker import state

from worker_app.config import get_settings

logger = logging.getLogger(__name__)

#: Seconds between two looks at whether any task still runs.
POLL = 0.2

_stopping = threading.Event()


def stopping() -> bool:
    """Whether this worker is shutting down (nothing new may start)."""
    return _stopping.is_set()


def margin(timeout: float) -> float:
    """What the end of a shutdown needs after the wait: stop the tasks still running, give
    their messages back, close connections."""
    return min(3.0, timeout / 5)


def install(worker: Any) -> None:
    """Route SIGTERM and SIGINT of this worker's main process to the bounded shutdown."""
    timeout = get_settings().shutdown_timeout.total_seconds()
    stop = Shutdown(worker, timeout)
    for sig in ("SIGTERM", "SIGINT"):
        platforms.signals[sig] = stop.on_signal
    logger.debug("SIGTERM and SIGINT stop the worker within %ss", timeout)


class Shutdown:
    """One worker's shutdown: begun by the first signal, hurried by the second."""

    def __init__(self, worker: Any, timeout: float) -> None:
        self.worker = worker
        self.timeout = timeout
        self.deadline = 0.0
        self.signals = 0
        self.poller: Any = None

    def on_signal(self, signum: Any = None, frame: Any = None) -> None:
        # A signal handler must not take the event loop's locks or do I/O: a thread hands the
        # work to the loop, waking it at once.
        self.signals += 1
        hub = getattr(self.worker, "hub", None)
        if hub is None:  # no event loop (yet): nothing runs; Celery stops as for a cold stop
            _stopping.set()
            state.should_terminate = EX_OK  # type: ignore[assignment]  # read by the event loop
            return
        work = self.begin if self.signals == 1 else self.finish
        threading.Thread(target=hub.call_soon, args=(work,), daemon=True).start()

    def begin(self) -> None:
        """Stop fetching, give back what has not started, wait for what runs."""
        if _stopping.is_set():
            return
        _stopping.set()
        self.deadline = time.monotonic() + self.timeout - margin(self.timeout)
        consumer = self.worker.consumer
        if consumer.task_consumer is not None:
            try:
                consumer.task_consumer.cancel()
            except Exception as exc:  # noqa: BLE001 - stopping goes on; nothing new is run
                logger.warning("could not stop fetching cleanly: %s", exc)
        given = give_back_unstarted(consumer.pool)
        running = len(state.active_requests)
        logger.warning(
            "shutting down: %d held job(s) not started given back; %d running, waiting up to "
            "%.1fs for them",
            given,
            running,
            max(0.0, self.deadline - time.monotonic()),
        )
        self.poller = self.worker.hub.call_repeatedly(POLL, self.check)
        self.check()

    def check(self) -> None:
        if not state.active_requests:
            self._exit("no task running")
        elif time.monotonic() >= self.deadline:
            self.finish()

    def finish(self) -> None:
        """Stop the tasks still running (their messages go back) and exit."""
        if not _stopping.is_set():
            self.begin()
        running = len(state.active_requests)
        if running:
            logger.warning(
                "shutting down: %d running task(s) stopped and put back on their queues", running
            )
            self.worker.consumer.cancel_active_requests()
        self._exit("")

    def _exit(self, why: str) -> None:
        if self.poller is not None:
            self.poller.cancel()
            self.poller = None
        if why:
            logger.info("shutting down: %s", why)
        state.should_terminate = EX_OK  # type: ignore[assignment]  # read by the event loop


def give_back_unstarted(pool: Any) -> int:
    """Put back on their queues the messages of reserved requests that no pool process has
    started, withdrawing them from the pool; returns how many."""
    inner = getattr(pool, "_pool", None)
    outbound = getattr(inner, "outbound_buffer", None)
    given = 0
    for request in list(state.reserved_requests):
        if request in state.active_requests or request.time_start:
            continue
        ref = getattr(request, "_apply_result", None)
        job = ref() if ref is not None else None
        if job is not None:
            # Sent to the pool: only one still waiting for a process can be withdrawn.
            if outbound is None or job._accepted or job not in outbound:
                continue
            outbound.remove(job)
            job.discard()
        state.task_ready(request)
        try:
            request.reject(requeue=True)
        except Exception as exc:  # noqa: BLE001 - it goes back at the end, with the rest
            logger.warning("%s not given back now: %s", request.id, exc)
            continue
        given += 1
    return given

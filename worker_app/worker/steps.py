"""Worker bootsteps: the heartbeat ``worker-app health`` reads, the periodic stats line, the
lease renewer that keeps a live worker's messages from being handed to another, the sweep that
gives a lost worker's messages back, and the release of parked messages."""

from __future__ import annotations

import gc
import heapq
import logging
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_before_create_process
from celery.worker import state

from worker_app import keys
from worker_app.broker.delays import release_due
from worker_app.broker.leases import LEASES
from worker_app.broker.qos import CARRIED
from worker_app.broker.queues import queue_stats
from worker_app.broker.registry import script
from worker_app.broker.sweep import end_orphan, orphans, sweep
from worker_app.config import get_settings
from worker_app.dlq.capture import LOST, dead_letter_lost
from worker_app.jobs.waits import FLUSH_INTERVAL as WAIT_FLUSH_INTERVAL
from worker_app.jobs.waits import WAITS
from worker_app.redis_client import get_redis
from worker_app.worker.health import beat
from worker_app.worker.stats import COUNTERS

logger = logging.getLogger(__name__)

# Leases: a fetched message is invisible to other workers for ASYNQ_VISIBILITY_TIMEOUT after
# its lease was last renewed. A live worker renews the leases of every message it holds every
# third of that (LeaseRenewer), so only a lost worker's messages come back, swept up every sixth
# of it (HeldSweeper): within about 1.2 timeouts of the loss.
LEASE_RENEWALS_PER_TIMEOUT = 3
RESTORE_SWEEPS_PER_TIMEOUT = 6


@worker_before_create_process.connect
def _freeze_before_fork(**_: Any) -> None:
    # Every object the worker's main process holds now (modules, the app, its tasks) leaves the
    # garbage collector's reach: a collection in the main process no longer writes to the
    # pages a pool process shares with it, which copy-on-write would then copy into both
    # (measured: pool processes' private memory +12 MiB each over a 20,000-job drain). The
    # garbage is collected before the first fork only: thawing later would write to every
    # frozen object, the very pages the pool processes forked earlier share. Objects frozen at
    # a later fork (a replaced pool process) are those made since; their cycles stay.
    if not gc.get_freeze_count():
        gc.collect()
    gc.freeze()


class Heartbeat(bootsteps.StartStopStep):
    """Worker bootstep: beat now and every ``ASYNQ_HEALTH_CHECK_INTERVAL``; stop beating
    (and remove the key) on a clean shutdown. Each beat carries the time of the lease
    renewer's last successful round, so ``worker-app health`` sees a renewer that stopped."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.node = ""
        self.renewer: LeaseRenewer | None = None
        self.interval = get_settings().health_check_interval.total_seconds()

    def start(self, worker: Any) -> None:
        self.node = str(worker.hostname)
        step = worker.blueprint.steps.get(LeaseRenewer.name)
        self.renewer = step if isinstance(step, LeaseRenewer) else None
        self._beat()
        self.tref = worker.timer.call_repeatedly(self.interval, self._beat)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            get_redis().delete(keys.HEARTBEAT + self.node)
        except redis.RedisError:
            logger.warning("could not remove the heartbeat of %s", self.node)

    def _beat(self) -> None:
        renewer = self.renewer
        try:
            if renewer is None:
                beat(self.node, self.interval)
            else:
                beat(self.node, self.interval, renewer.renewed_at, renewer.timeout)
        except redis.RedisError as exc:
            logger.warning("heartbeat not written: Redis is unreachable (%s)", exc)


#: Seconds between two sweeps of cancelled entries out of the worker's timer: at a few
#: thousand jobs a second, a second's worth of entries (~600 bytes each) at most.
TIMER_COMPACT_EVERY = 1.0


def compact_timer(timer: Any) -> int:
    """Drop the cancelled entries of ``timer``'s heap; how many went."""
    queue: list[Any] = timer._queue
    live = [item for item in queue if not item.entry.canceled]
    dropped = len(queue) - len(live)
    if dropped:
        queue[:] = live  # the same list: the timer's running iterator keeps reading it
        heapq.heapify(queue)
    return dropped


class TimerCompactor(bootsteps.StartStopStep):
    """Worker bootstep: every ``TIMER_COMPACT_EVERY`` seconds, drop cancelled entries from the
    event loop's timer.

    The prefork pool schedules a soft time-limit timer for every job and cancels it when the job
    ends, but a cancelled entry stays in the timer's heap until it would have fired: with the
    default 5-minute limit, every job of the last 270 s (about 600 bytes each, 160 MiB at
    1,000 jobs/s). Runs on the event loop, like the timer; a sweep reads only the heap (a few
    thousand entries at most), well under a millisecond."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        timer = worker.timer
        if getattr(timer, "_queue", None) is None:  # a threaded timer: nothing piles up here
            return
        self.tref = timer.call_repeatedly(TIMER_COMPACT_EVERY, compact_timer, (timer,))

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


class StatsLine(bootsteps.StartStopStep):
    """Worker bootstep: every ``ASYNQ_STATS_INTERVAL`` one line with what this worker has done
    since it started, the jobs running now, and the depth of every queue."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.interval = get_settings().stats_interval.total_seconds()

    def start(self, worker: Any) -> None:
        self.tref = worker.timer.call_repeatedly(self.interval, self.log)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def log(self) -> None:
        counts = COUNTERS.snapshot(state.all_total_count[0], len(state.active_requests))
        try:
            depths = ",".join(f"{q.name}:{q.ready}" for q in queue_stats(get_redis()))
        except redis.RedisError:
            depths = "unknown (Redis unreachable)"
        logger.info(
            "stats: processed=%d succeeded=%d failed=%d retried=%d cancelled=%d "
            "dead_lettered=%d active=%d queues=%s",
            counts["processed"],
            counts["succeeded"],
            counts["failed"],
            counts["retried"],
            counts["cancelled"],
            counts["dead_lettered"],
            counts["active"],
            depths,
        )


class PeriodicThread(bootsteps.StartStopStep):
    """A worker bootstep that calls :meth:`tick` every ``period`` seconds from a thread of its
    own, so neither a busy event loop nor a ``solo`` pool running a long task can delay it."""

    period = 1.0
    #: What the tick keeps doing, for the warning when Redis is away.
    doing = "periodic work"
    #: Ticks that failed with an error other than Redis being away.
    failures = 0

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.stopped = threading.Event()
        self.worker: Any = None

    def start(self, worker: Any) -> None:
        self.worker = worker
        name = type(self).__name__
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def stop(self, worker: Any) -> None:
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                done = self.tick()
            except redis.RedisError as exc:
                logger.warning("%s skipped: Redis is unreachable (%s)", self.doing, exc)
            except Exception:
                # The thread must outlive any one failure: a dead lease renewer lets another
                # worker take this worker's long tasks.
                self.failures += 1
                logger.exception("%s failed (%d times so far); going on", self.doing, self.failures)
            else:
                if done:
                    logger.debug("%s: %d", self.doing, done)

    def tick(self) -> int:
        """One round of work, done by each subclass; returns how many items it handled."""
        return 0


class LeaseRenewer(PeriodicThread):
    """Every third of ``ASYNQ_VISIBILITY_TIMEOUT``, re-score every message this worker holds
    (running, reserved or waiting for its ETA) in kombu's unacked index. ``ZADD XX`` only
    touches entries that still exist: a message acknowledged or already restored is never
    brought back. A round counts as a success when Redis answered, also when the worker held
    nothing: the heartbeat reports the last one (:class:`Heartbeat`)."""

    doing = "lease renewal"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timeout = get_settings().visibility_timeout.total_seconds()
        self.period = self.timeout / LEASE_RENEWALS_PER_TIMEOUT
        LEASES.timeout = self.timeout
        #: Unix time of the last round that succeeded (the start, until one has).
        self.renewed_at = time.time()

    def start(self, worker: Any) -> None:
        self.renewed_at = time.time()
        LEASES.begin()
        super().start(worker)

    def tick(self) -> int:
        changed = self._renew()
        self.renewed_at = time.time()
        LEASES.renewed()
        return changed

    def _renew(self) -> int:
        consumer = getattr(self.worker, "consumer", None)
        task_consumer = getattr(consumer, "task_consumer", None)
        qos = getattr(getattr(task_consumer, "channel", None), "qos", None)
        delivered = getattr(qos, "_delivered", None)
        # One C-level copy each under the GIL; a lost connection's running jobs too.
        tags = [*(delivered or ()), *CARRIED]
        if not tags:
            # Nothing to renew, but Redis must answer for the round to count: a request handed
            # to the pool before a cut-off may have left this list (its connection was lost)
            # and must see the gap (worker_app.broker.leases).
            get_redis().ping()
            return 0
        # Scored by the server's clock (renew.lua), as the fetch holds them.
        return int(script("renew")(get_redis(), [], tags) or 0)


class HeldSweeper(PeriodicThread):
    """Every sixth of ``ASYNQ_VISIBILITY_TIMEOUT``, put back on their queues the messages whose
    lease expired (their worker was lost). Once per timeout, one worker (whichever takes the
    turn) also ends the records left without any message: failed, dead-lettered as ``lost``,
    so an operator can replay them. Only workers sweep: a process that only reads replies
    (``celery inspect``, Flower) never restores anything."""

    doing = "sweep of expired leases"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timeout = get_settings().visibility_timeout.total_seconds()
        self.period = max(0.5, self.timeout / RESTORE_SWEEPS_PER_TIMEOUT)
        self.ticks = 0
        #: Where the search for records without a message goes on, per status.
        self.cursors: dict[str, float] = {}

    def tick(self) -> int:
        client = get_redis()
        done = len(sweep(client, self.timeout))
        self.ticks += 1
        turn = max(1, int(self.timeout / self.period))
        # One search per timeout among the workers that share it (a worker with a longer
        # timeout, which searches only older records, never holds back one with a shorter).
        turn_key = f"{keys.ORPHAN_SEARCH}:{int(self.timeout)}"
        if self.ticks % turn == 0 and client.set(
            turn_key, str(self.worker.hostname), nx=True, ex=max(1, int(self.timeout))
        ):
            settings = get_settings()
            retention = int(settings.retention.total_seconds())
            found = orphans(client, settings.queue_names, self.timeout, self.cursors)
            for orphan in found:
                if end_orphan(client, orphan, retention, LOST):
                    dead_letter_lost(orphan.job_id)
                    done += 1
        return done


class DelayReleaser(PeriodicThread):
    """Every ``RELEASE_PERIOD`` seconds, move the parked messages that are due onto their
    queues."""

    period = keys.RELEASE_PERIOD
    doing = "release of delayed jobs"

    def tick(self) -> int:
        return release_due(get_redis())


class WaitFlusher(PeriodicThread):
    """Every second, add the waits this worker counted to the per-queue histograms; once more
    when the worker stops."""

    period = WAIT_FLUSH_INTERVAL
    doing = "wait histogram update"

    def tick(self) -> int:
        WAITS.flush(get_redis())
        return 0

    def stop(self, worker: Any) -> None:
        super().stop(worker)
        try:
            WAITS.flush(get_redis())
        except redis.RedisError as exc:
            logger.warning("%s skipped: Redis is unreachable (%s)", self.doing, exc)

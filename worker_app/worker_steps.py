"""Worker bootsteps: the heartbeat ``worker-app health`` reads, and the periodic stats line."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps

from worker_app import keys
from worker_app.config import get_settings
from worker_app.health import beat
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """Worker bootstep: beat now and every ``ASYNQ_HEALTH_CHECK_INTERVAL``; stop beating
    (and remove the key) on a clean shutdown."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.node = ""
        self.interval = get_settings().asynq_health_check_interval.total_seconds()

    def start(self, worker: Any) -> None:
        self.node = str(worker.hostname)
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
        try:
            beat(self.node, self.interval)
        except redis.RedisError as exc:
            logger.warning("heartbeat not written: Redis is unreachable (%s)", exc)


class StatsLine(bootsteps.StartStopStep):
    """Worker bootstep: every ``ASYNQ_STATS_INTERVAL`` one line with what this worker has done
    since it started, the jobs running now, and the depth of every queue."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.interval = get_settings().asynq_stats_interval.total_seconds()

    def start(self, worker: Any) -> None:
        self.tref = worker.timer.call_repeatedly(self.interval, self.log)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def log(self) -> None:
        from celery.worker import state

        from worker_app.queues import queue_stats
        from worker_app.stats import COUNTERS

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

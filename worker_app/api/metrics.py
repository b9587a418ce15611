"""Prometheus metrics of what Flower cannot see: queue depths, dead letters, job records, and
the transactional outbox when ``OUTBOX_DATABASE_URL`` is set.

Read from Redis (and PostgreSQL) at scrape time, so every API replica reports the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker_app import keys
from worker_app.broker.queues import queue_stats
from worker_app.config import get_settings
from worker_app.dlq import entries
from worker_app.jobs import records
from worker_app.redis_client import get_redis


class StateCollector(Collector):
    """Gauges of the queues, the dead-letter queue, job statuses and workers online."""

    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        ready = GaugeMetricFamily("worker_app_queue_ready", "Messages waiting", labels=["queue"])
        unacked = GaugeMetricFamily(
            "worker_app_queue_unacked", "Messages fetched, not yet acknowledged", labels=["queue"]
        )
        scheduled = GaugeMetricFamily(
            "worker_app_queue_scheduled", "Fetched messages waiting for their ETA", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "worker_app_queue_oldest_age_seconds",
            "How long the oldest waiting message has waited (0: empty)",
            labels=["queue"],
        )
        stats = queue_stats(client)
        for q in stats:
            ready.add_metric([q.name], q.ready)
            unacked.add_metric([q.name], q.unacked)
            scheduled.add_metric([q.name], q.scheduled)
            oldest.add_metric([q.name], q.oldest_age)
        yield from (ready, unacked, scheduled, oldest)
        yield self._waits(client, [q.name for q in stats])

        store = entries.store()
        dead = GaugeMetricFamily(
            "worker_app_dead_letters", "Dead-letter entries", labels=["reason"]
        )
        for reason in entries.REASONS:
            dead.add_metric([reason], store.count(entries.Filter(reason=reason)))
        yield dead
        trimmed = GaugeMetricFamily(
            "worker_app_dead_letters_trimmed", "Entries trimmed by retention or size, ever"
        )
        trimmed.add_metric([], store.trimmed_total())
        yield trimmed

        by_status = GaugeMetricFamily("worker_app_jobs", "Job records by status", labels=["status"])
        pipe = client.pipeline(transaction=False)
        for status in records.STATUSES:
            pipe.zcard(f"{keys.JOBS_BY}status:{status}")
        for status, count in zip(records.STATUSES, pipe.execute(), strict=True):
            by_status.add_metric([status], int(count))
        yield by_status

        workers = GaugeMetricFamily("worker_app_workers_online", "Workers with a fresh heartbeat")
        workers.add_metric([], sum(1 for _ in client.scan_iter(f"{keys.WORKER}*", count=500)))
        yield workers

    @staticmethod
    def _waits(client: Any, queues: list[str]) -> Metric:
        """Seconds from due to start, per queue, as Prometheus histograms (cumulative)."""
        family = HistogramMetricFamily(
            "worker_app_wait_seconds", "Time from due (published or ETA) to start", labels=["queue"]
        )
        pipe = client.pipeline(transaction=False)
        for name in queues:
            pipe.hgetall(keys.WAIT + name)
        for name, raw in zip(queues, pipe.execute(), strict=True):
            data = {_text(k): float(v) for k, v in raw.items()}
            running = 0.0
            buckets = []
            for bound in (*keys.WAIT_BUCKETS, "+Inf"):
                running += data.get(str(bound), 0.0)
                buckets.append((str(bound), running))
            family.add_metric([name], buckets, sum_value=data.get("sum", 0.0))
        return family


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def registry() -> CollectorRegistry:
    """A registry holding only worker_app's state (no process metrics of the API itself)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StateCollector())
    if get_settings().outbox_database_url is not None:
        # Imported only when an outbox is configured: psycopg is optional.
        from worker_app.outbox.status import OutboxCollector

        reg.register(OutboxCollector())
    return reg

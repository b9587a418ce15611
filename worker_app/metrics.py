"""Prometheus metrics of what Flower cannot see: queue depths, dead letters, job records.

Read from Redis at scrape time, so every API replica reports the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker_app import dlq, jobs, keys
from worker_app.queues import queue_stats
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
        for q in queue_stats(client):
            ready.add_metric([q.name], q.ready)
            unacked.add_metric([q.name], q.unacked)
            scheduled.add_metric([q.name], q.scheduled)
        yield from (ready, unacked, scheduled)

        store = dlq.store()
        dead = GaugeMetricFamily(
            "worker_app_dead_letters", "Dead-letter entries", labels=["reason"]
        )
        for reason in dlq.REASONS:
            dead.add_metric([reason], store.count(dlq.Filter(reason=reason)))
        yield dead
        trimmed = GaugeMetricFamily(
            "worker_app_dead_letters_trimmed", "Entries trimmed by retention or size, ever"
        )
        trimmed.add_metric([], store.trimmed_total())
        yield trimmed

        by_status = GaugeMetricFamily("worker_app_jobs", "Job records by status", labels=["status"])
        pipe = client.pipeline(transaction=False)
        for status in jobs.STATUSES:
            pipe.zcard(f"{keys.JOBS_BY}status:{status}")
        for status, count in zip(jobs.STATUSES, pipe.execute(), strict=True):
            by_status.add_metric([status], int(count))
        yield by_status

        workers = GaugeMetricFamily("worker_app_workers_online", "Workers with a fresh heartbeat")
        workers.add_metric([], sum(1 for _ in client.scan_iter(f"{keys.WORKER}*", count=500)))
        yield workers


def registry() -> CollectorRegistry:
    """A registry holding only worker_app's state (no process metrics of the API itself)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StateCollector())
    return reg

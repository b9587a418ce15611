"""How far behind the relays are: unsent rows and the age of the oldest, for the CLI and
Prometheus (read from PostgreSQL at call time, so every reader sees the same numbers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker_app.outbox.sql import OutboxTable, connect, database_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxStatus:
    """The outbox as an operator sees it."""

    table: str
    #: Committed rows not yet published.
    pending: int
    #: Seconds since the oldest unsent row was inserted (0: none).
    oldest_pending_age: float
    #: Published rows still kept (deleted ASYNQ_RETENTION after they were sent).
    sent: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_status(url: str | None = None, table: OutboxTable | None = None) -> OutboxStatus:
    """Count the outbox.

    Raises:
        OutboxUnavailable: no database configured, or psycopg missing.
        psycopg.Error: the database is unreachable or the table does not exist.
    """
    table = table or OutboxTable.from_settings()
    with connect(url or database_url(), autocommit=True) as conn:
        row = conn.execute(table.status()).fetchone()
    assert row is not None  # an aggregate always returns one row
    return OutboxStatus(table.qualified, int(row[0]), float(row[1]), int(row[2]))


class OutboxCollector(Collector):
    """Gauges of the outbox; ``worker_app_outbox_up`` is 0 while it cannot be read."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("worker_app_outbox_up", "Whether the outbox table could be read")
        try:
            status = read_status()
        except Exception as exc:  # a scrape must answer, whatever the outbox's trouble
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            logger.warning("outbox metrics unavailable: %s", detail)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        pending = GaugeMetricFamily(
            "worker_app_outbox_pending", "Committed outbox rows not yet published"
        )
        pending.add_metric([], status.pending)
        yield pending
        oldest = GaugeMetricFamily(
            "worker_app_outbox_oldest_pending_age_seconds",
            "Age of the oldest unsent outbox row (0: none)",
        )
        oldest.add_metric([], status.oldest_pending_age)
        yield oldest

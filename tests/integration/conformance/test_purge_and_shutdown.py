"""``celery purge -f`` and ``celery control shutdown``: each with a worker of its own, so no
other worker takes the jobs being purged or is stopped by mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from tests.helpers.conformance import (
    QUEUES,
    ConformanceWorker,
    celery,
    executions,
    shown,
    worker_env,
)
from tests.helpers.conformance_tasks import add
from tests.helpers.env import wait_until

pytestmark = pytest.mark.conformance

PER_QUEUE = 10


def waiting(client: redis.Redis, queue: str) -> int:
    """Messages waiting on ``queue``: its list and any priority sublists kombu may use."""
    lists = [queue, *client.scan_iter(match=f"{queue}\x06\x16*")]
    return sum(int(client.llen(name)) for name in lists)


def test_purge_removes_the_waiting_jobs_and_they_never_run(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    purged = [add.apply_async((n, n), queue=q).id for q in QUEUES for n in range(PER_QUEUE)]
    depths = {queue: waiting(redis_client, queue) for queue in QUEUES}
    assert all(depth >= PER_QUEUE for depth in depths.values()), depths

    done = celery("purge", "-f")

    assert done.returncode == 0, shown(done)
    count = re.search(r"Purged (\d+) messages? from 3 known task queues", done.stdout)
    assert count and int(count.group(1)) == sum(depths.values()), shown(done)
    assert {queue: waiting(redis_client, queue) for queue in QUEUES} == dict.fromkeys(QUEUES, 0)

    worker = ConformanceWorker(tmp_path / "worker.log", worker_env()).start()
    try:
        # One job per queue behind the purged ones: once these ran, the purged would have.
        markers = [add.apply_async((0, 0), queue=q).id for q in QUEUES]
        wait_until(
            lambda: set(markers) <= set(executions(redis_client, worker)),
            30,
            "the jobs sent after the purge to run",
        )
        assert not set(purged) & set(executions(redis_client, worker)), "purged jobs ran"
    finally:
        worker.stop()


def test_control_shutdown_stops_the_worker(tmp_path: Path) -> None:
    worker = ConformanceWorker(tmp_path / "worker.log", worker_env()).start()
    process = worker.process
    assert process is not None
    try:
        # Celery's worker stops without replying, so the command itself reports that no node
        # replied (exit 69) with vanilla Celery as well: what counts is that the worker stops.
        done = celery("control", "shutdown", "-d", worker.node)
        assert "Traceback" not in done.stdout + done.stderr, shown(done)

        wait_until(lambda: process.poll() is not None, 30, "the worker to stop")
        assert process.returncode == 0, worker.log()
        assert worker.lines("Got shutdown from remote")
    finally:
        worker.stop()

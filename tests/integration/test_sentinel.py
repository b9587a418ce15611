"""Redis Sentinel: a failover while jobs are in flight. A producer publishes by ``.delay()`` at
a steady rate through Sentinel, two workers drain, and the master changes under them; every job
whose publish was acknowledged runs, and the figures are printed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers.env import ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app.cli.devredis import RedisServer
from worker_app.cli.devsentinel import SentinelSet

pytestmark = pytest.mark.fault

JOBS = 2000
RATE = 400.0  # publishes per second: the failover lands in the middle of the run


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    deployment = SentinelSet(tmp_path / "sentinel")
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def _producer(run: str, env: dict[str, str], stop_file: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.helpers.steady_producer", run, str(JOBS), str(RATE)]
    return subprocess.Popen(
        [*argv, str(stop_file)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def _ledger_counts(ledger: redis.Redis, run: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in ledger.hgetall(f"ledger:{run}").items()}


def _through_a_failover(
    sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path, switch: Any
) -> dict[str, Any]:
    run = uuid.uuid4().hex
    ledger = redis.Redis.from_url(redis_server.url, decode_responses=True)
    env = child_env(REDIS_URL=sentinels.url, LEDGER_URL=redis_server.url)
    workers = [Worker(tmp_path / f"worker-{n}.log", env, concurrency=2).start() for n in (1, 2)]
    stop_file = tmp_path / "stop"
    producer = _producer(run, env, stop_file)
    try:
        quarter = JOBS // 4
        wait_until(lambda: len(_ledger_counts(ledger, run)) >= quarter, 60, "a quarter of the jobs")
        switched_at = time.monotonic()
        switch()
        out, _ = producer.communicate(timeout=180)
        report = json.loads(out.strip().splitlines()[-1])
        acknowledged = set(report["ids"])
        wait_until(
            lambda: acknowledged <= set(_ledger_counts(ledger, run)), 120, "every acknowledged job"
        )
        counts = _ledger_counts(ledger, run)
        figures = {
            "acknowledged": len(acknowledged),
            "lost": len(acknowledged - set(counts)),
            "ran_twice": sum(1 for n in counts.values() if n > 1),
            "seconds_without_service": round(report["longest_gap"], 2),
            "publish_errors": report["errors"],
            "after_switch": round(time.monotonic() - switched_at, 1),
        }
        print(f"\nfailover figures: {figures}")
        return figures
    finally:
        stop_file.touch()
        if producer.poll() is None:
            producer.kill()
        for worker in workers:
            worker.stop()


def test_a_planned_failover_loses_no_acknowledged_job(
    sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    figures = _through_a_failover(sentinels, redis_server, tmp_path, sentinels.failover)
    assert figures["acknowledged"] == JOBS
    assert figures["lost"] == 0
    assert figures["seconds_without_service"] < 10


def test_the_master_killed_mid_run_loses_no_acknowledged_job(
    sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    def kill() -> None:
        before = sentinels.master_port()
        sentinels.kill_master()
        sentinels.wait_new_master(before)

    figures = _through_a_failover(sentinels, redis_server, tmp_path, kill)
    assert figures["acknowledged"] == JOBS
    assert figures["lost"] == 0
    assert figures["seconds_without_service"] < 15

"""A worker host whose clock is 30 s ahead: leases are scored by Redis's clock, so it neither
takes live jobs from other workers nor keeps its own jobs from them once it is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.env import ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from tests.helpers.spots import Spots
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault

OFFSET = 30.0
VISIBILITY = 4.0


@pytest.fixture
def workers(broker: RedisServer, tmp_path: Path) -> Iterator[tuple[Worker, Worker, Spots]]:
    spots = Spots(tmp_path / "spots")
    common = {
        "REDIS_URL": broker.url,
        "SPOT_FILE": str(spots.path),
        "ASYNQ_VISIBILITY_TIMEOUT": f"{VISIBILITY:g}s",
        "ASYNQ_TASK_TIMEOUT": "30s",
    }
    ahead = Worker(
        tmp_path / "ahead.log",
        child_env(
            **common,
            CLOCK_OFFSET=str(OFFSET),
            PYTHONPATH=f"{ROOT / 'tests' / 'helpers' / 'skew'}{os.pathsep}{ROOT}",
        ),
        concurrency=2,
    )
    right = Worker(tmp_path / "right.log", child_env(**common), concurrency=2)
    ahead.start()
    right.start()
    try:
        yield ahead, right, spots
    finally:
        for worker in (ahead, right):
            if worker.process is not None and worker.process.poll() is None:
                worker.stop()


def _publish(broker: RedisServer, run: str, count: int, seconds: float) -> list[str]:
    code = (
        "import json\nfrom tests.helpers import e2e_tasks\n"
        f"print(json.dumps([e2e_tasks.spot.delay({run!r}, {seconds}).id for _ in range({count})]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(REDIS_URL=broker.url),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


def test_a_worker_whose_clock_is_ahead_takes_no_live_job_and_loses_none(
    broker: RedisServer, workers: tuple[Worker, Worker, Spots]
) -> None:
    ahead, right, spots = workers
    ids = _publish(broker, "skew", 16, 1.5)
    wait_until(lambda: set(ids) <= spots.ended(), 60, "every job to run")
    runs = Counter(job_id for what, job_id, _, _ in spots.lines() if what == "start")
    by_node = Counter(node for what, _, node, _ in spots.lines() if what == "end")
    print(f"\nruns per host: {dict(by_node)}")
    assert set(runs.values()) == {1}  # nobody took a live worker's job
    assert {ahead.node, right.node} == set(by_node)
    for worker in (ahead, right):
        assert not worker.lines("from a lost worker"), worker.log()

    # The worker whose clock is ahead dies holding a job: the other gets it back after one
    # visibility timeout by Redis's clock, not 30 s late.
    long_ids = _publish(broker, "skew-kill", 4, 3.0)

    def ahead_runs_one() -> bool:
        return any(
            what == "start" and node == ahead.node and job_id in long_ids
            for what, job_id, node, _ in spots.lines()
        )

    wait_until(ahead_runs_one, 30, "the worker ahead to start a job")
    assert ahead.process is not None
    os.kill(ahead.process.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(
        lambda: set(long_ids) <= spots.ended() and _recovered(spots, ahead.node, long_ids),
        60,
        "the lost worker's job to run again",
    )
    recovered_in = _recovered(spots, ahead.node, long_ids) - killed_at
    print(f"lost worker's job started again {recovered_in:.1f}s after the kill")
    assert recovered_in < VISIBILITY + 4


def _recovered(spots: Spots, lost_node: str, ids: list[str]) -> float:
    """When the last job the lost worker had started, and never ended, started elsewhere."""
    lines = spots.lines()
    started_there = {j for w, j, n, _ in lines if w == "start" and n == lost_node and j in ids}
    ended_there = {j for w, j, n, _ in lines if w == "end" and n == lost_node}
    lost = started_there - ended_there
    again = [at for w, j, n, at in lines if w == "start" and n != lost_node and j in lost]
    return max(again) if lost and len(again) >= len(lost) else 0.0

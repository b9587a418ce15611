"""The lease renewer meets a bug: it goes on renewing, and when it can no longer renew,
``worker-app health`` says so within one visibility timeout (own module: own workers)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app

pytestmark = pytest.mark.fault

FAULT_INCLUDE = f"{Worker.include},tests.helpers.renewer_fault"


def faulty_worker(log_path: Path, env: dict[str, str]) -> Worker:
    worker = Worker(log_path, env)
    worker.include = FAULT_INCLUDE
    return worker


def health(env: dict[str, str], node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "worker-app"), "health", "--node", node],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_a_renewer_that_fails_once_goes_on_and_the_long_task_runs_once(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    # The acceptance case is a 3-minute task under a 20 s timeout (9 timeouts); the same ratio
    # at 45 s under 5 s keeps the suite fast. A renewal round every 5/3 s: the failed round
    # leaves the lease unrenewed for 10/3 s, and any lapse beyond 5 s hands the task to `idle`.
    lease = 5.0
    fault_key = f"renewer-fault:{uuid.uuid4()}"
    env = child_env(
        ASYNQ_VISIBILITY_TIMEOUT=f"{lease:g}s",
        RENEWER_FAULT="on-request",
        RENEWER_FAULT_KEY=fault_key,
    )
    one = faulty_worker(tmp_path / "one.log", env).start()
    idle = Worker(tmp_path / "idle.log", child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{lease:g}s"))
    try:
        key = f"long:{uuid.uuid4()}"
        task_id = e2e_tasks.sleepy.apply_async(
            (key, 9 * lease), time_limit=90, soft_time_limit=85
        ).id
        wait_until(lambda: redis_client.llen(key) == 1, 30, "the task to start on `one`")
        idle.start()  # only now: the task is `one`'s, and `idle` is ready to take it
        redis_client.set(fault_key, 1)
        wait_until(lambda: one.lines("lease renewal failed"), 3 * lease, "the injected failure")
        assert AsyncResult(task_id, app=app).get(timeout=90) == "done"
        time.sleep(lease)  # a second run would have started by now
        runs = [json.loads(r) for r in redis_client.lrange(key, 0, -1)]
        assert len(runs) == 1, runs
        failures = one.lines("lease renewal failed")
        assert len(failures) == 1 and "(1 times so far); going on" in failures[0]
        assert "RuntimeError: injected lease renewer failure #1" in one.log()
        assert not one.lines("recovered") and not idle.lines("recovered")
        assert health(env, one.node).returncode == 0
    finally:
        one.stop()
        if idle.process is not None:
            idle.stop()


def test_health_fails_one_visibility_timeout_after_the_renewer_stops_succeeding(
    tmp_path: Path,
) -> None:
    lease, interval = 6.0, 1.0
    env = child_env(
        ASYNQ_VISIBILITY_TIMEOUT=f"{lease:g}s",
        ASYNQ_HEALTH_CHECK_INTERVAL=f"{interval:g}s",
        RENEWER_FAULT="always",
    )
    worker = faulty_worker(tmp_path / "worker.log", env)
    launched = time.time()
    worker.start()
    ready = time.time()
    try:
        ok = health(env, worker.node)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"ok: {worker.node} beat ") and "leases renewed" in ok.stdout

        wait_until(lambda: health(env, worker.node).returncode == 1, 3 * lease, "health to fail")
        failed_by = time.time()
        # Not before one timeout since the renewer started. (How soon after it is bounded by
        # the wait above, three timeouts: the machine is shared, probes take their time.)
        assert failed_by - launched > lease
        print(f"unhealthy {failed_by - ready:.1f}s after ready (timeout {lease:g}s)")
        failed = health(env, worker.node)
        assert failed.returncode == 1
        assert len(failed.stderr.strip().splitlines()) == 1
        assert failed.stderr.startswith(f"unhealthy: {worker.node}: leases not renewed for ")
        assert failed.stderr.strip().endswith(f"s (visibility timeout {lease:g}s)")
        assert worker.lines(r"lease renewal failed \(\d+ times so far\)")
    finally:
        worker.stop()

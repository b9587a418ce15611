"""Leases: a short visibility timeout never hands a live worker's long task to another worker,
a SIGKILLed worker's task comes back about one timeout later, and a worker stalled longer than
its lease starts nothing it held across the stall (own module: own workers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from tests.helpers.spots import Spots
from worker_app import app, keys

pytestmark = pytest.mark.fault

LEASE = 3.0  # seconds; production default is 60


def attempts(client: redis.Redis, key: str) -> int:
    return len([json.loads(r) for r in client.lrange(key, 0, -1)])


def test_a_task_longer_than_the_visibility_timeout_runs_exactly_once(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s")
    one = Worker(tmp_path / "one.log", env).start()
    two = Worker(tmp_path / "two.log", env).start()  # idle, sweeping, ready to steal
    try:
        key = f"long:{uuid.uuid4()}"
        task_id = e2e_tasks.sleepy.apply_async(
            (key, 4 * LEASE), time_limit=60, soft_time_limit=55
        ).id
        assert AsyncResult(task_id, app=app).get(timeout=60) == "done"
        time.sleep(LEASE)
        assert attempts(redis_client, key) == 1
        assert not one.lines("recovered") and not two.lines("recovered")
    finally:
        one.stop()
        two.stop()


def test_a_killed_workers_task_comes_back_within_about_one_timeout(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s")
    doomed = Worker(tmp_path / "doomed.log", env, concurrency=1).start()
    key = f"killed:{uuid.uuid4()}"
    task_id = e2e_tasks.sleepy.apply_async((key, 2 * LEASE), time_limit=60, soft_time_limit=55).id
    wait_until(lambda: attempts(redis_client, key) == 1, 30, "the task to start")
    assert doomed.process is not None
    # Kill the pool process with its parent, as an OOM kill of the container would.
    children = Path(f"/proc/{doomed.process.pid}/task/{doomed.process.pid}/children").read_text()
    for child in children.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait()
    killed = time.monotonic()

    rescuer = Worker(tmp_path / "rescuer.log", env).start()
    try:
        wait_until(lambda: attempts(redis_client, key) == 2, 60, "the task to run again")
        back_after = time.monotonic() - killed
        assert AsyncResult(task_id, app=app).get(timeout=60) == "done"
    finally:
        rescuer.stop()
    print(f"recovered {back_after:.1f}s after the kill (visibility timeout {LEASE}s)")
    assert back_after < 3 * LEASE + 5
    assert rescuer.lines(rf"recovered e2e.sleepy\[{task_id}\] from a lost worker")


def _pool_processes(worker: Worker) -> list[int]:
    assert worker.process is not None
    pid = worker.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _late_starts(spots: Spots, node: str, since: float) -> list[str]:
    return [job for what, job, at_node, at in spots.lines() if what == "start"
            and at_node == node and at > since]  # fmt: skip


def _still_serves(stalled: Worker, rescuer: Worker | None, spots: Spots) -> None:
    """The worker that gave a job back goes on taking jobs (its pool slot was freed)."""
    if rescuer is not None:
        rescuer.stop()
    jobs = [e2e_tasks.spot.delay("after", 0.0).id for _ in range(3)]
    wait_until(lambda: set(jobs) <= spots.ended(), 30, "the worker to run jobs again")


def test_a_job_waiting_for_a_busy_pool_during_a_stall_does_not_start_after_it(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """The worker's main process stops (SIGSTOP: a blocked event loop, a host cut off) while its
    one pool process runs job A and job B waits for it. Another worker takes both back when
    their leases lapse and runs them. When the stalled worker resumes, its pool process is free:
    B must not start there (it ran elsewhere); the main process gives it back."""
    spot_file = tmp_path / "spots"
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s", SPOT_FILE=str(spot_file))
    spots = Spots(spot_file)
    stalled = Worker(tmp_path / "stalled.log", env, concurrency=1).start()
    rescuer: Worker | None = None
    try:
        time.sleep(LEASE)  # the lease renewals have begun
        first = e2e_tasks.spot.delay("stall", 2.0).id
        second = e2e_tasks.spot.delay("stall", 0.1).id
        wait_until(
            lambda: (
                redis_client.hget(f"{keys.JOB}{second}", "worker") == stalled.node
                and any(what == "start" and job == first for what, job, _, _ in spots.lines())
            ),
            30,
            "A to run and B to be held behind it",
        )
        assert stalled.process is not None
        stalled.process.send_signal(signal.SIGSTOP)
        try:
            rescuer = Worker(tmp_path / "rescuer.log", env).start()
            wait_until(lambda: second in spots.ended(), 4 * LEASE + 30, "B to run elsewhere")
        finally:
            stalled.process.send_signal(signal.SIGCONT)
        resumed = time.time()
        refused = "not started: its lease may have lapsed"
        wait_until(lambda: stalled.lines(refused), 3 * LEASE, "B's refusal")
        time.sleep(1.0)
        assert _late_starts(spots, stalled.node, resumed) == []
        for job in (first, second):
            assert redis_client.hget(f"{keys.JOB}{job}", "status") == "succeeded"
        _still_serves(stalled, rescuer, spots)
    finally:
        stalled.stop()
        if rescuer is not None:
            rescuer.stop()


def test_a_job_handed_to_a_pool_process_before_a_stall_does_not_start_after_it(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Job B is already written to the pool process (stopped, so it has not read it) when the
    worker's main process stops too. Another worker takes B back when its lease lapses and runs
    it. When both resume, the pool process reads B: it must not start it (the main process's
    check came before the stall; the pool process's own check refuses it)."""
    spot_file = tmp_path / "spots"
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s", SPOT_FILE=str(spot_file))
    spots = Spots(spot_file)
    stalled = Worker(tmp_path / "stalled.log", env, concurrency=1).start()
    rescuer: Worker | None = None
    try:
        time.sleep(LEASE)  # the lease renewals have begun
        (pool,) = _pool_processes(stalled)
        os.kill(pool, signal.SIGSTOP)
        job = e2e_tasks.spot.delay("stall", 0.1).id
        wait_until(
            lambda: redis_client.hget(f"{keys.JOB}{job}", "worker") == stalled.node,
            30,
            "the job to be held",
        )
        time.sleep(0.5)  # handed to the (stopped) pool process
        assert stalled.process is not None
        stalled.process.send_signal(signal.SIGSTOP)
        try:
            rescuer = Worker(tmp_path / "rescuer.log", env).start()
            wait_until(lambda: job in spots.ended(), 4 * LEASE + 30, "the job to run elsewhere")
        finally:
            os.kill(pool, signal.SIGCONT)
            stalled.process.send_signal(signal.SIGCONT)
        resumed = time.time()
        refused = "not started: its lease may have lapsed"
        wait_until(lambda: stalled.lines(refused), 3 * LEASE, "the pool process's refusal")
        time.sleep(1.0)
        assert _late_starts(spots, stalled.node, resumed) == []
        assert redis_client.hget(f"{keys.JOB}{job}", "status") == "succeeded"
        _still_serves(stalled, rescuer, spots)
    finally:
        stalled.stop()
        if rescuer is not None:
            rescuer.stop()

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


REFUSED = "not started: its lease may have lapsed"


class Stall:
    """A one-process worker to stall (SIGSTOP), the file its jobs note their runs in, and the
    worker that takes its jobs back meanwhile."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        spot_file = tmp_path / "spots"
        self.env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s", SPOT_FILE=str(spot_file))
        self.spots = Spots(spot_file)
        self.worker = Worker(tmp_path / "stalled.log", self.env, concurrency=1)
        self.rescuer: Worker | None = None
        self.resumed = 0.0

    def __enter__(self) -> Stall:
        self.worker.start()
        time.sleep(LEASE)  # the lease renewals have begun
        return self

    def __exit__(self, *_: object) -> None:
        self.worker.stop()
        if self.rescuer is not None:
            self.rescuer.stop()

    def rescue(self, job: str, what: str, also_stopped: tuple[int, ...] = ()) -> None:
        """Stop the worker's main process, start another worker, wait until ``job`` ran there,
        then resume the stalled processes (``also_stopped`` first)."""
        process = self.worker.process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        try:
            self.rescuer = Worker(self.tmp_path / "rescuer.log", self.env).start()
            wait_until(lambda: job in self.spots.ended(), 4 * LEASE + 30, what)
        finally:
            for pid in also_stopped:
                os.kill(pid, signal.SIGCONT)
            process.send_signal(signal.SIGCONT)
        self.resumed = time.time()

    def refused(self, what: str) -> None:
        """The stalled worker refuses to start what it held, and starts nothing after resuming."""
        wait_until(lambda: self.worker.lines(REFUSED), 3 * LEASE, what)
        time.sleep(1.0)
        late = [
            job
            for kind, job, node, at in self.spots.lines()
            if kind == "start" and node == self.worker.node and at > self.resumed
        ]
        assert late == []

    def still_serves(self) -> None:
        """The worker that gave a job back goes on taking jobs (its pool slot was freed)."""
        if self.rescuer is not None:
            self.rescuer.stop()
        jobs = [e2e_tasks.spot.delay("after", 0.0).id for _ in range(3)]
        wait_until(lambda: set(jobs) <= self.spots.ended(), 30, "the worker to run jobs again")


def test_a_job_waiting_for_a_busy_pool_during_a_stall_does_not_start_after_it(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """The worker's main process stops (SIGSTOP: a blocked event loop, a host cut off) while its
    one pool process runs job A and job B waits for it. Another worker takes both back when
    their leases lapse and runs them. When the stalled worker resumes, its pool process is free:
    B must not start there (it ran elsewhere); the main process gives it back."""
    with Stall(tmp_path) as stall:
        first = e2e_tasks.spot.delay("stall", 2.0).id
        second = e2e_tasks.spot.delay("stall", 0.1).id
        wait_until(
            lambda: (
                redis_client.hget(f"{keys.JOB}{second}", "worker") == stall.worker.node
                and any(what == "start" and job == first for what, job, _, _ in stall.spots.lines())
            ),
            30,
            "A to run and B to be held behind it",
        )
        stall.rescue(second, "B to run elsewhere")
        stall.refused("B's refusal")
        for job in (first, second):
            assert redis_client.hget(f"{keys.JOB}{job}", "status") == "succeeded"
        stall.still_serves()


def test_a_job_handed_to_a_pool_process_before_a_stall_does_not_start_after_it(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Job B is already written to the pool process (stopped, so it has not read it) when the
    worker's main process stops too. Another worker takes B back when its lease lapses and runs
    it. When both resume, the pool process reads B: it must not start it (the main process's
    check came before the stall; the pool process's own check refuses it)."""
    with Stall(tmp_path) as stall:
        (pool,) = _pool_processes(stall.worker)
        os.kill(pool, signal.SIGSTOP)
        job = e2e_tasks.spot.delay("stall", 0.1).id
        wait_until(
            lambda: redis_client.hget(f"{keys.JOB}{job}", "worker") == stall.worker.node,
            30,
            "the job to be held",
        )
        time.sleep(0.5)  # handed to the (stopped) pool process
        stall.rescue(job, "the job to run elsewhere", also_stopped=(pool,))
        stall.refused("the pool process's refusal")
        assert redis_client.hget(f"{keys.JOB}{job}", "status") == "succeeded"
        stall.still_serves()

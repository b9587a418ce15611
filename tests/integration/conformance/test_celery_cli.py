"""Celery's own CLI against a running worker: ``inspect``, ``control``, ``status``, ``result``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from celery import states
from celery.result import AsyncResult

from tests.helpers.conformance import (
    REPLY_TIMEOUT,
    ConformanceWorker,
    celery,
    executions,
    poll,
    shown,
)
from tests.helpers.conformance_tasks import WAKE, add, sleep
from tests.helpers.env import wait_until
from worker_app import app

pytestmark = pytest.mark.conformance


def remote(worker: ConformanceWorker, kind: str, *argv: str) -> str:
    """``celery inspect|control ARGV`` to ``worker``; its output, once it exited 0 naming it."""
    done = celery(kind, *argv, "-d", worker.node, "-t", REPLY_TIMEOUT)
    assert done.returncode == 0, shown(done)
    assert worker.node in done.stdout, shown(done)
    return done.stdout


def state(task_id: str) -> str:
    """What ``AsyncResult(task_id).state`` says (Celery's stubs leave REVOKED out of its type)."""
    return str(AsyncResult(task_id, app=app).state)


@pytest.fixture
def sleepers(
    conformance_worker: ConformanceWorker, redis_client: redis.Redis
) -> Iterator[list[str]]:
    """Both of the worker's slots busy with ``conformance.sleep`` until the test ends."""
    ids = [sleep.delay(50).id for _ in range(2)]
    try:
        wait_until(
            lambda: set(ids) <= set(executions(redis_client, conformance_worker)),
            30,
            "both sleepers to start",
        )
        yield ids
    finally:
        for task_id in ids:
            redis_client.set(WAKE + task_id, 1)
        for task_id in ids:
            AsyncResult(task_id, app=app).get(timeout=30)


@pytest.mark.parametrize(
    "command, expected",
    [
        ("ping", "pong"),
        ("reserved", ""),
        ("stats", '"pool"'),
        ("registered", "conformance.add"),
    ],
)
def test_inspect_answers_for_the_worker(
    conformance_worker: ConformanceWorker, command: str, expected: str
) -> None:
    assert expected in remote(conformance_worker, "inspect", command)


def test_inspect_active_lists_the_running_jobs(
    conformance_worker: ConformanceWorker, sleepers: list[str]
) -> None:
    out = remote(conformance_worker, "inspect", "active")

    assert "conformance.sleep" in out
    for task_id in sleepers:
        assert task_id in out


def test_control_revoke_of_a_waiting_job_means_it_never_runs(
    conformance_worker: ConformanceWorker, redis_client: redis.Redis, sleepers: list[str]
) -> None:
    # Both slots are taken: the job waits until the sleepers end, after the revoke.
    victim = add.delay(5, 5).id
    out = remote(conformance_worker, "control", "revoke", victim)
    assert "flagged as revoked" in out
    assert victim not in executions(redis_client, conformance_worker)

    for task_id in sleepers:
        redis_client.set(WAKE + task_id, 1)
    discarded = rf"Discarding revoked task: conformance.add\[{victim}\]"
    wait_until(
        lambda: (
            conformance_worker.lines(discarded)
            or victim in executions(redis_client, conformance_worker)
        ),
        30,
        "the revoked job to be discarded",
    )
    assert victim not in executions(redis_client, conformance_worker), "the revoked job ran"
    assert poll(lambda: state(victim) == states.REVOKED, 10), (
        f"AsyncResult.state is {state(victim)}, not REVOKED"
    )


def test_control_rate_limit_spaces_the_tasks_runs(
    conformance_worker: ConformanceWorker, redis_client: redis.Redis
) -> None:
    out = remote(conformance_worker, "control", "rate_limit", "conformance.add", "10/m")
    assert "new rate limit set successfully" in out
    try:
        assert "rate_limit=10/m" in remote(
            conformance_worker, "inspect", "registered", "rate_limit"
        )
        first, second = add.delay(1, 1).id, add.delay(2, 2).id
        started: dict[str, float] = {}

        def both_ran() -> bool:
            runs = executions(redis_client, conformance_worker)
            for task_id in (first, second):
                if task_id in runs:
                    started.setdefault(task_id, time.monotonic())
            return len(started) == 2

        wait_until(both_ran, 30, "both rate-limited jobs to run")
        # 10/m is one run every 6 s; no more than one token is ever saved up.
        assert abs(started[second] - started[first]) >= 4.5
    finally:
        remote(conformance_worker, "control", "rate_limit", "conformance.add", "0")


def test_status_lists_the_worker_online(conformance_worker: ConformanceWorker) -> None:
    done = celery("status", "-t", "5")

    assert done.returncode == 0, shown(done)
    assert f"{conformance_worker.node}: OK" in done.stdout
    assert "1 node online." in done.stdout


def test_result_prints_a_finished_jobs_result(conformance_worker: ConformanceWorker) -> None:
    task_id = add.delay(20, 22).id
    assert AsyncResult(task_id, app=app).get(timeout=30) == 42

    done = celery("result", task_id)

    assert done.returncode == 0, shown(done)
    assert done.stdout.strip() == "42"

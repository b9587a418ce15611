"""Flower's REST API against a real worker: the worker list, the task list, and running a task."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery.result import AsyncResult

from tests.helpers.conformance import ConformanceWorker, Flower, executions
from tests.helpers.conformance_tasks import add
from tests.helpers.env import child_env, wait_until
from worker_app import app

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def flower(
    conformance_worker: ConformanceWorker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flower]:
    """Flower on the app with the conformance tasks registered (it publishes async-apply)."""
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    proc = Flower(log, child_env(), app="tests.helpers.conformance_flower").launch()
    try:
        yield proc.wait_up()
    finally:
        proc.stop()


def test_api_workers_lists_the_worker(
    conformance_worker: ConformanceWorker, flower: Flower
) -> None:
    def listed() -> bool:
        answer = flower.get("/api/workers", refresh="1")
        assert answer.status_code == 200, answer.text
        return conformance_worker.node in answer.json()

    wait_until(listed, 30, "Flower to list the worker")


def test_async_apply_runs_the_task(
    conformance_worker: ConformanceWorker, flower: Flower, redis_client: redis.Redis
) -> None:
    answer = flower.post("/api/task/async-apply/conformance.add", {"args": [20, 22]})

    assert answer.status_code == 200, answer.text
    task_id = answer.json()["task-id"]
    assert AsyncResult(task_id, app=app).get(timeout=30) == 42
    assert executions(redis_client, conformance_worker)[task_id] == 1


def test_api_tasks_lists_a_finished_task(
    conformance_worker: ConformanceWorker, flower: Flower
) -> None:
    # Workers send task events once a Flower has asked for them (it does so every 5 s).
    wait_until(
        lambda: conformance_worker.lines(r"Events of group \{task\} enabled by remote"),
        30,
        "Flower to enable task events",
    )
    task_id = add.delay(3, 4).id
    assert AsyncResult(task_id, app=app).get(timeout=30) == 7

    def listed() -> bool:
        answer = flower.get("/api/tasks")
        assert answer.status_code == 200, answer.text
        task = answer.json().get(task_id) or {}
        return task.get("name") == "conformance.add" and task.get("state") == "SUCCESS"

    wait_until(listed, 30, "Flower's /api/tasks to list the task as succeeded")

"""Canvas of plain ``@app.task`` functions from a process that imports worker_app."""

from __future__ import annotations

import pytest
import redis
from celery import chain, chord, group
from celery.result import GroupResult

from tests.helpers.conformance import ConformanceWorker, executions
from tests.helpers.conformance_tasks import add, mul, xsum

pytestmark = pytest.mark.conformance


def test_chain_passes_each_result_on(conformance_worker: ConformanceWorker) -> None:
    assert chain(add.s(1, 2), add.s(3)).apply_async().get(timeout=30) == 6
    assert chain(add.s(1, 2), mul.s(10), add.s(4)).apply_async().get(timeout=30) == 34


def test_group_returns_every_result_in_order(
    conformance_worker: ConformanceWorker, redis_client: redis.Redis
) -> None:
    result = group(add.s(i, i) for i in range(10)).apply_async()

    assert isinstance(result, GroupResult)
    assert result.get(timeout=30) == [2 * i for i in range(10)]
    runs = executions(redis_client, conformance_worker)
    assert [runs[child.id] for child in result.results or []] == [1] * 10


def test_chord_runs_its_callback_on_the_group_results(
    conformance_worker: ConformanceWorker, redis_client: redis.Redis
) -> None:
    result = chord(group(add.s(i, i) for i in range(10)), xsum.s()).apply_async()

    assert result.get(timeout=30) == 90
    runs = executions(redis_client, conformance_worker)
    assert runs[result.id] == 1
    parent = result.parent
    assert isinstance(parent, GroupResult)
    assert [runs[child.id] for child in parent.results or []] == [1] * 10

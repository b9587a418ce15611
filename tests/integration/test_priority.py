"""Weighted and strict priority across queues, measured on real workers.

Every test pre-loads the queues, starts a worker and records, from inside the tasks, which
queue each execution came from.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.data import BROKER_KEYS
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app

QUEUES = ("critical", "default", "low")


@pytest.fixture
def broker(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """Empty queues before and after: left-over messages would skew the shares."""
    redis_client.delete(*BROKER_KEYS)
    yield redis_client
    redis_client.delete(*BROKER_KEYS)


def preload(per_queue: int, key: str, queues: tuple[str, ...] = QUEUES) -> None:
    with app.producer_or_acquire() as producer:
        for queue in queues:
            for _ in range(per_queue):
                e2e_tasks.mark.apply_async((key,), queue=queue, producer=producer)


def run_worker(
    tmp_path: Path, client: redis.Redis, key: str, executions: int, **settings: str
) -> list[str]:
    """Start a worker, let it run ``executions`` jobs, stop it; return their queues in order."""
    concurrency = int(settings.pop("concurrency", "1"))
    worker = Worker(tmp_path / "worker.log", child_env(**settings), concurrency=concurrency)
    worker.start()
    try:
        wait_until(lambda: client.llen(key) >= executions, 120, f"{executions} executions")
    finally:
        worker.stop()
    return [str(queue) for queue in client.lrange(key, 0, executions - 1)]


@pytest.mark.parametrize(
    ("weights", "concurrency", "expected"),
    [
        ("critical:6,default:3,low:1", "1", (60, 30, 10)),
        ("critical:1,default:1,low:1", "1", (33.3, 33.3, 33.3)),
        ("critical:6,default:3,low:1", "2", (60, 30, 10)),
    ],
    ids=["6:3:1", "1:1:1", "6:3:1 with 2 slots"],
)
def test_busy_queues_share_the_worker_by_weight(
    tmp_path: Path, broker: redis.Redis, weights: str, concurrency: str, expected: tuple[float, ...]
) -> None:
    key = f"order:{uuid.uuid4()}"
    preload(600, key)

    order = run_worker(tmp_path, broker, key, 500, ASYNQ_QUEUES=weights, concurrency=concurrency)

    counts = Counter(order)
    shares = [100.0 * counts[queue] / len(order) for queue in QUEUES]
    for queue, share, want in zip(QUEUES, shares, expected, strict=True):
        # 4.5 standard deviations of a share of 500 draws: a false alarm about once in 150,000
        # checks, while round-robin (33% each) still fails 6:3:1 by far.
        tolerance = 4.5 * 100 * math.sqrt(want / 100 * (1 - want / 100) / len(order))
        assert abs(share - want) <= tolerance, (
            f"{queue}: {share:.1f}% of 500, expected {want}% +-{tolerance:.1f} ({counts})"
        )
    # A 10% queue is missing from 100 draws once in 38,000 runs (0.9 ** 100); from 50, once in 190.
    assert set(order[:100]) == set(QUEUES), "a queue starved in the first 100 executions"


def test_strict_priority_drains_higher_queues_first(tmp_path: Path, broker: redis.Redis) -> None:
    key = f"order:{uuid.uuid4()}"
    preload(100, key)
    slots = 2

    order = run_worker(
        tmp_path, broker, key, 300, ASYNQ_STRICT_PRIORITY="true", concurrency=str(slots)
    )

    for higher, lower in (("critical", "default"), ("default", "low")):
        last_higher = max(i for i, queue in enumerate(order) if queue == higher)
        first_lower = order.index(lower)
        # Only messages already in flight in another slot may start after the first lower one.
        assert last_higher < first_lower + slots, f"{lower} started before {higher} was empty"


def test_a_queue_subset_keeps_its_configured_weights(tmp_path: Path, broker: redis.Redis) -> None:
    key = f"order:{uuid.uuid4()}"
    preload(400, key, ("critical", "low"))
    worker = Worker(tmp_path / "worker.log", child_env(), queues="critical,low", concurrency=1)
    worker.start()
    try:
        wait_until(lambda: broker.llen(key) >= 300, 120, "300 executions")
    finally:
        worker.stop()
    counts = Counter(broker.lrange(key, 0, 299))
    # 6:1 over the two consumed queues: about 86 / 14 percent. 4.5 standard deviations of a
    # share of 300 draws (9.1 points) rarely fails by chance; an even 1:1 split (50%) fails.
    want = 100 / 7
    tolerance = 4.5 * 100 * math.sqrt(want / 100 * (1 - want / 100) / 300)
    assert abs(100.0 * counts["low"] / 300 - want) <= tolerance, counts


def test_a_worker_naming_an_unconfigured_queue_refuses_to_start() -> None:
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "worker_app", "worker", "-Q", "critical,urgent"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: -Q names 'urgent', which ASYNQ_QUEUES does not configure; "
        "configured queues: critical, default, low"
    ]


def test_queues_command_counts_ready_and_scheduled_messages(broker: redis.Redis) -> None:
    preload(3, "unused", ("critical",))
    preload(2, "unused", ("low",))
    # A message already fetched and waiting for its ETA, as kombu records it.
    message = {"headers": {"eta": "2999-01-01T00:00:00+00:00"}, "body": ""}
    broker.hset("unacked", "tag-1", json.dumps([message, "default", "default"]))

    done = subprocess.run(
        [str(BIN / "worker-app"), "queues", "--json"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert [(rows[q]["ready"], rows[q]["scheduled"], rows[q]["unacked"]) for q in QUEUES] == [
        (3, 0, 0),
        (0, 1, 1),
        (2, 0, 0),
    ]
    assert [rows[q]["share"] for q in QUEUES] == [60.0, 30.0, 10.0]

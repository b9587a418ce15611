"""A task that kills its pool process: run three times, then dead-lettered (its own module, so
no other worker competes for the message)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from tests import e2e_tasks
from tests.conftest import Worker, child_env
from tests.test_dlq import entry_of, good_batch_succeeds, runs

pytestmark = pytest.mark.fault


def test_a_poison_pill_runs_three_times_then_is_dead_lettered(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    own = Worker(tmp_path / "worker.log", child_env()).start()
    try:
        key = f"crash:{uuid.uuid4()}"
        # A production-like time limit (the producer stamps it on the message): the pool
        # reports each lost process, within its 5 s maintenance period at worst, long before
        # the limit could kill the attempt instead.
        task_id = e2e_tasks.crash.apply_async((key,), time_limit=60, soft_time_limit=55).id
        entry = entry_of(task_id, timeout=90)
        assert (entry.reason, entry.exc_type) == ("poison_pill", "PoisonPill")
        assert runs(redis_client, key) == 3
        good_batch_succeeds()
        assert runs(redis_client, key) == 3  # nothing ran it a fourth time
        assert own.process is not None and own.process.poll() is None
    finally:
        own.stop()

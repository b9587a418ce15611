"""Periodic jobs without a beat process: declarations, one job per slot, the schedules CLI."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.helpers import e2e_tasks  # noqa: F401  - the scheduled task must be registered here too
from worker_app import keys
from worker_app.cli.main import main
from worker_app.flow.schedules import Periodic, fire, periodic


def test_a_slot_is_enqueued_once_whoever_fires_it(redis_client: redis.Redis) -> None:
    tag = uuid.uuid4().hex[:8]
    entry = Periodic(f"once-{tag}", "e2e.tick", every=timedelta(seconds=10), payload={"key": tag})
    slot = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    before = redis_client.llen("default")
    assert fire(entry, slot) == f"periodic:once-{tag}:20260101T120000Z"
    assert fire(entry, slot) is None  # a second scheduler, or a restart, on the same slot
    assert redis_client.llen("default") == before + 1
    # The run is still pending: the next slot is skipped and counted, not enqueued.
    assert fire(entry, slot + timedelta(seconds=10)) is None
    assert redis_client.hget(keys.PERIODIC_SKIPPED, entry.name) == "1"
    assert redis_client.llen("default") == before + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": "10s", "cron": "* * * * *"}, "exactly one of every= or cron="),
        ({}, "exactly one of every= or cron="),
        ({"cron": "*/5 * * *"}, "must have five fields"),
        ({"cron": "61 * * * *"}, "is invalid"),
        ({"every": "soon"}, "every='soon' is not"),
        ({"every": "500ms"}, "at least 1s"),
    ],
)
def test_a_bad_declaration_fails_at_import_with_one_line(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        periodic(f"bad-{uuid.uuid4().hex[:8]}", "e2e.tick", **kwargs)
    assert "\n" not in str(caught.value)


def test_a_name_declared_twice_is_refused() -> None:
    name = f"twice-{uuid.uuid4().hex[:8]}"
    periodic(name, "e2e.tick", every="1h", payload={"key": name})
    with pytest.raises(ValueError, match="declared twice"):
        periodic(name, "e2e.tick", every="1h", payload={"key": name})


def test_schedules_cli_lists_last_and_next_run(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    entry = periodic(name, "e2e.tick", cron="*/5 * * * *", payload={"key": name})
    job_id = fire(entry, datetime(2026, 1, 1, 12, 5, tzinfo=UTC))
    with pytest.raises(SystemExit) as code:
        main(["schedules", "--json"])
    assert code.value.code == 0
    shown = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert shown["maintenance.cleanup-nightly"]["schedule"] == "cron 0 3 * * *"
    assert shown[name]["last_job_id"] == job_id
    assert shown[name]["last_status"] == "pending"
    assert shown[name]["schedule"] == "cron */5 * * * *"
    with pytest.raises(SystemExit):
        main(["schedules"])
    table = capsys.readouterr().out
    assert "NEXT RUN" in table and name in table

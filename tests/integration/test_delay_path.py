"""``.delay()`` and ``.apply_async()`` publish through the product's own path
(``worker_app.producer.send``): for every option it serves, the queue gets the message Celery's
producer would have put there, the job gets the same record, and Celery's publish signals fire
as they do for Celery. Calls it does not serve go through Celery and still publish."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery import chain
from celery.signals import after_task_publish, before_task_publish

from tests.helpers import e2e_tasks
from worker_app import keys
from worker_app.broker import envelope
from worker_app.celery import app
from worker_app.producer import send

# Fields that differ between any two messages of the same call: ids, tags and clocks.
_PER_MESSAGE = {
    "id",
    "root_id",
    "correlation_id",
    "delivery_tag",
    keys.PUBLISHED_AT,
    keys.FIRST_ENQUEUED_AT,
}
_CLOCKS = {"eta", "expires"}
_RECORD_PER_JOB = {"id", "created_at", "updated_at", "run_at"}

# Celery's apply_async takes these options through **options; its stubs do not list them.
_apply: Any = e2e_tasks.mark.apply_async

CASES: dict[str, Callable[[], Any]] = {
    "delay by name": lambda: e2e_tasks.mark.delay(key="k"),
    "positional": lambda: e2e_tasks.mark.apply_async(("k",)),
    "payload model": lambda: e2e_tasks.record.delay(key="k", value=3),
    "countdown": lambda: e2e_tasks.mark.apply_async(("k",), countdown=30),
    "eta, parked": lambda: e2e_tasks.mark.apply_async(
        ("k",), eta=datetime.now(UTC) + timedelta(hours=2)
    ),
    "expires in seconds": lambda: e2e_tasks.mark.apply_async(("k",), expires=60),
    "expires as a date": lambda: e2e_tasks.mark.apply_async(
        ("k",), expires=datetime.now(UTC) + timedelta(minutes=5)
    ),
    "queue": lambda: e2e_tasks.mark.apply_async(("k",), queue="low"),
    "priority": lambda: e2e_tasks.mark.apply_async(("k",), priority=7),
    "headers": lambda: e2e_tasks.mark.apply_async(("k",), headers={"tenant": "acme", "n": "2"}),
    "link and link_error": lambda: e2e_tasks.mark.apply_async(
        ("k",), link=e2e_tasks.stamp.s("after"), link_error=e2e_tasks.stamp.si("failed")
    ),
    "chain": lambda: chain(e2e_tasks.mark.s("k"), e2e_tasks.stamp.si("next")).apply_async(),
    "limits, shadow, ignore_result": lambda: e2e_tasks.mark.apply_async(
        ("k",), time_limit=30, soft_time_limit=20, shadow="shadowed", ignore_result=True
    ),
    "retries and group": lambda: _apply(("k",), retries=2, group_id="g-1", group_index=0),
    "parent ids": lambda: _apply(("k",), root_id="root-1", parent_id="parent-1"),
    "datetime argument": lambda: e2e_tasks.mark.apply_async(
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(),)
    ),
}


@pytest.fixture
def lists(
    raw_redis: redis.Redis,
) -> Iterator[Callable[[], list[tuple[str, dict[str, Any]]]]]:
    """What every list and the delayed set hold, taken out (oldest first)."""

    def take() -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        for queue in ("critical", "default", "low"):
            for key in envelope.lists_of(queue):
                while (item := raw_redis.rpop(key)) is not None:
                    found.append((key, json.loads(_text(item))))
        for member in raw_redis.zrange(keys.DELAYED, 0, -1):
            key, _, message = _text(member).partition("\n")
            found.append((f"parked:{key}", json.loads(message)))
        raw_redis.delete(keys.DELAYED)
        return found

    yield take


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _normalized(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(message))
    out["body"] = json.loads(base64.b64decode(out["body"]))
    for signature in out["body"][2].get("chain") or []:  # the next tasks' ids are new per call
        signature["options"].pop("task_id", None)
    expiration = out["properties"].pop("expiration", None)  # milliseconds from the publish
    out["expiration"] = None if expiration is None else round(int(expiration) / 1000)
    for part in ("headers", "properties"):
        for name in _PER_MESSAGE:
            out[part].pop(name, None)
        for name in _CLOCKS & out[part].keys():
            value = out[part][name]
            out[part][name] = value is not None  # compared below, within a second
    return out


def _clock(message: dict[str, Any], name: str) -> float | None:
    value = message["headers"].get(name)
    return datetime.fromisoformat(value).timestamp() if value else None


def _record(client: redis.Redis, job_id: str) -> dict[str, str]:
    stored = client.hgetall(keys.JOB + job_id)
    fields = {_text(k): _text(v) for k, v in stored.items()}
    return {k: v for k, v in fields.items() if k not in _RECORD_PER_JOB}


def _through_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send, "served", lambda task, options: False)


@pytest.mark.parametrize("case", list(CASES))
def test_the_message_and_record_are_those_celery_would_publish(
    case: str,
    raw_redis: redis.Redis,
    lists: Callable[[], list[tuple[str, dict[str, Any]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call = CASES[case]
    ours = call()
    mine = lists()
    with monkeypatch.context() as patch:
        _through_celery(patch)
        theirs = call()
    celery_made = lists()
    assert len(mine) == len(celery_made) == 1, (mine, celery_made)
    (key, message), (celery_key, celery_message) = mine[0], celery_made[0]
    assert key == celery_key
    mine_id, theirs_id = message["headers"]["id"], celery_message["headers"]["id"]
    if case != "chain":  # a chain's result is its last task's
        assert (mine_id, theirs_id) == (ours.id, theirs.id)
    assert message["properties"]["correlation_id"] == mine_id
    assert _normalized(message) == _normalized(celery_message)
    for name in _CLOCKS:
        mine_at, theirs_at = _clock(message, name), _clock(celery_message, name)
        assert (mine_at is None) == (theirs_at is None)
        if mine_at is not None and theirs_at is not None:
            assert abs(mine_at - theirs_at) < 1.0, name
    assert _record(raw_redis, mine_id) == _record(raw_redis, theirs_id)
    assert _record(raw_redis, mine_id)["status"] in ("pending", "scheduled", "retrying")


def test_the_publish_signals_fire_with_the_message_headers(
    raw_redis: redis.Redis, lists: Callable[[], list[tuple[str, dict[str, Any]]]]
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def before(headers: dict[str, Any], routing_key: str = "", **_: Any) -> None:
        seen.append(("before", {"id": headers["id"], "queue": routing_key}))

    def after(headers: dict[str, Any], routing_key: str = "", **_: Any) -> None:
        seen.append(("after", {"id": headers["id"], "queue": routing_key}))

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        result = e2e_tasks.mark.apply_async(("k",), queue="critical")
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    expected = {"id": result.id, "queue": "critical"}
    assert seen == [("before", expected), ("after", expected)]
    assert len(lists()) == 1


def test_what_it_does_not_serve_goes_through_celery(
    raw_redis: redis.Redis, lists: Callable[[], list[tuple[str, dict[str, Any]]]]
) -> None:
    assert send.served(e2e_tasks.mark, {"countdown": 1, "queue": "low"})
    with app.producer_or_acquire() as producer:
        assert not send.served(e2e_tasks.mark, {"producer": producer})
        result = e2e_tasks.mark.apply_async(("k",), producer=producer)
    assert not send.served(e2e_tasks.mark, {"stamped_headers": ["s"], "s": 1})
    taken = lists()
    assert [m["headers"]["id"] for _, m in taken] == [result.id]
    assert _record(raw_redis, result.id)["status"] == "pending"


def test_a_task_id_given_twice_is_published_once(
    raw_redis: redis.Redis, lists: Callable[[], list[tuple[str, dict[str, Any]]]]
) -> None:
    job_id = str(uuid.uuid4())
    assert e2e_tasks.mark.apply_async(("k",), task_id=job_id).id == job_id
    assert e2e_tasks.mark.apply_async(("k",), task_id=job_id).id == job_id
    assert [m["headers"]["id"] for _, m in lists()] == [job_id]

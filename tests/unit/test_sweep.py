"""Giving held messages back and finding records without a message, against the private Redis."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis

from worker_app import keys
from worker_app.broker import sweep
from worker_app.jobs import records


@pytest.fixture
def raw(raw_redis: redis.Redis) -> redis.Redis:
    return raw_redis


def held(client: redis.Redis, job_id: str, queue: str, lease: float, note: bytes = b"x") -> str:
    tag = str(uuid.uuid4())
    envelope = (
        b'{"body": "", "headers": {"id": "'
        + job_id.encode()
        + b'", "task": "t", "note": "'
        + note
        + b'"}, "properties": {"delivery_tag": "'
        + tag.encode()
        + b'", "delivery_info": {"exchange": "q", "routing_key": "q"}}}'
    )
    client.hset(keys.HELD, tag, b"[" + envelope + b', "q", "' + queue.encode() + b'"]')
    client.zadd(keys.HELD_INDEX, {tag: lease})
    return tag


def test_an_expired_lease_is_restored_with_its_bytes_and_a_renewed_one_is_not(
    raw: redis.Redis,
) -> None:
    lost = held(raw, "lost-1", "q", time.time() - 100, note=b"caf\xe9")
    alive = held(raw, "alive-1", "q", time.time())
    done = sweep.sweep(raw, 10)
    assert [item.tag for item in done] == [lost]
    item: Any = raw.rpop("q")
    assert isinstance(item, bytes) and b"\\udce9" in item  # the byte kept, as an escape
    message = json.loads(item)
    assert message["headers"]["redelivered"] is True
    assert message["properties"]["delivery_info"]["redelivered"] is True
    assert raw.hexists(keys.HELD, alive) and not raw.hexists(keys.HELD, lost)
    assert raw.llen(keys.WAKE + "q") == 1


def test_a_lease_renewed_after_the_sweep_read_it_is_not_restored(raw: redis.Redis) -> None:
    tag = held(raw, "renewed-1", "q", time.time() - 100)
    raw.zadd(keys.HELD_INDEX, {tag: time.time()})  # the worker renews meanwhile
    assert sweep.restore(raw, [tag], head=False, ceiling=time.time() - 10) == []
    assert raw.hexists(keys.HELD, tag)


def publish_record(job_id: str, queue: str, status: str = "pending") -> None:
    records.store().published(job_id, "t", queue, status, time.time(), 0, {}, reset=True)


def test_only_records_without_any_message_are_orphans(raw: redis.Redis) -> None:
    ids = {name: f"{name}-{uuid.uuid4()}" for name in ("gone", "waiting", "parked", "held")}
    ids["elsewhere"] = f"elsewhere-{uuid.uuid4()}"
    for name, job_id in ids.items():
        publish_record(job_id, "other" if name == "elsewhere" else "q")
    raw.lpush("q\x06\x163", b'{"headers": {"id": "' + ids["waiting"].encode() + b'"}}')
    raw.zadd(keys.DELAYED, {b'q\n{"headers": {"id": "' + ids["parked"].encode() + b'"}}': 1})
    held(raw, ids["held"], "q", time.time())
    time.sleep(0.05)
    found = sweep.orphans(raw, ["q"], 0.01, {})
    assert [orphan.job_id for orphan in found] == [ids["gone"]]
    assert sweep.end_orphan(raw, found[0], 60, "MessageLost: gone")
    job = records.store().get(ids["gone"])
    assert job is not None and job.status == "failed" and job.last_error == "MessageLost: gone"
    # A record that changed since the search saw it is left alone.
    again = sweep.Orphan(ids["waiting"], "pending", "0")
    assert not sweep.end_orphan(raw, again, 60, "MessageLost")

"""The worker's fetch script on its own, against the private Redis: what one call pops, holds,
starts, refuses and releases (with LMPOP, and with the RPOP loop older servers get)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from worker_app import jobs, keys
from worker_app.job_scripts import FETCH

Fetch = Callable[..., list[Any]]
P = keys.PREFIX + ":"


@pytest.fixture(params=["lmpop", "rpop"])
def fetch(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Fetch:
    source = FETCH
    if request.param == "rpop":
        old = "local lmpop = (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000"
        assert old in source
        source = source.replace(old, "local lmpop = false")
    script = redis_client.register_script(source)
    tag = uuid.uuid4().hex[:8]

    def call(
        queues: list[str],
        orders: list[list[int]],
        acks: list[tuple[str, str]] = (),  # type: ignore[assignment]
        given: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    ) -> list[Any]:
        reply = script(
            keys=[f"idx:{tag}", f"hash:{tag}", *queues],
            args=[
                P,
                time.time(),
                len(queues),
                len(orders),
                len(acks),
                "worker-1",
                60,
                len(given),
                *(position for order in orders for position in order),
                *(field for ack in acks for field in ack),
                *(field for pair in given for field in pair),
            ],
        )
        call.index, call.hash = f"idx:{tag}", f"hash:{tag}"  # type: ignore[attr-defined]
        call.backlog = reply.pop() if given else None  # type: ignore[attr-defined]
        return [reply[i : i + 3] for i in range(0, len(reply), 3)]

    return call


def message(job_id: str, queue: str, **headers: Any) -> str:
    return json.dumps(
        {
            "body": "",
            "headers": {"id": job_id, "task": "t", "retries": 0, "eta": None, **headers},
            "properties": {
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }
    )


def record(job_id: str, queue: str) -> None:
    jobs.store().published(job_id, "t", queue, "pending", time.time(), 0, {}, reset=True)


def test_pops_in_the_given_order_holds_and_starts_each_job(
    fetch: Fetch, redis_client: redis.Redis
) -> None:
    q1, q2 = f"q1:{uuid.uuid4()}", f"q2:{uuid.uuid4()}"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for job_id, queue in zip(ids, (q1, q2, q2), strict=True):
        record(job_id, queue)
        redis_client.lpush(queue, message(job_id, queue))
    # Slot 1 tries q2 first, slot 2 q1 first, slot 3 q1 first (empty now: falls to q2).
    got = fetch([q1, q2], [[2, 1], [1, 2], [1, 2], [1, 2]])
    assert [(int(q), verdict) for q, verdict, _ in got] == [(2, "held"), (1, "held"), (2, "held")]
    assert [json.loads(item)["headers"]["id"] for _, _, item in got] == [ids[1], ids[0], ids[2]]
    assert redis_client.hlen(fetch.hash) == 3 and redis_client.zcard(fetch.index) == 3  # type: ignore[attr-defined]
    held = json.loads(redis_client.hvals(fetch.hash)[0])  # type: ignore[attr-defined]
    assert held[1:] == ["", held[0]["properties"]["delivery_info"]["routing_key"]]
    for job_id in ids:
        job = jobs.store().get(job_id)
        assert job is not None and job.status == "active" and job.worker == "worker-1"
        assert job.started_at is not None and job.attempts == 1
    assert fetch([q1, q2], [[1, 2]]) == []


def test_a_cancelled_job_is_dropped_and_a_bad_item_handed_back_unheld(
    fetch: Fetch, redis_client: redis.Redis
) -> None:
    queue = f"q:{uuid.uuid4()}"
    cancelled, later = str(uuid.uuid4()), str(uuid.uuid4())
    record(cancelled, queue)
    jobs.store().cancel(cancelled)
    record(later, queue)
    redis_client.lpush(
        queue,
        message(cancelled, queue),
        "not json",
        message(later, queue, eta="2030-01-01T00:00:00+00:00"),
    )
    got = fetch([queue], [[1], [1], [1]])
    assert [verdict for _, verdict, _ in got] == ["cancelled", "bad", "held"]
    assert redis_client.hlen(fetch.hash) == 1  # type: ignore[attr-defined]
    # A message with an ETA is held but its job starts when it is due, in the pool process.
    job = jobs.store().get(later)
    assert job is not None and job.status == "pending"


def test_acks_release_their_messages_and_end_the_jobs_that_succeeded(
    fetch: Fetch, redis_client: redis.Redis
) -> None:
    queue = f"q:{uuid.uuid4()}"
    ok, failed = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (ok, failed):
        record(job_id, queue)
        redis_client.lpush(queue, message(job_id, queue))
    got = fetch([queue], [[1], [1]])
    tags = [json.loads(item)["properties"]["delivery_tag"] for _, _, item in got]
    assert fetch([queue], [[1]], [(tags[0], ok), (tags[1], "")]) == []
    assert redis_client.hlen(fetch.hash) == 0 and redis_client.zcard(fetch.index) == 0  # type: ignore[attr-defined]
    done, other = jobs.store().get(ok), jobs.store().get(failed)
    assert done is not None and done.status == "succeeded" and done.finished_at is not None
    assert 0 < redis_client.ttl(keys.JOB + ok) <= 60
    assert other is not None and other.status == "active"
    assert redis_client.zscore(keys.JOBS_BY + "status:succeeded", ok) is not None
    assert redis_client.zscore(keys.JOBS_BY + "status:active", ok) is None


def test_a_message_popped_by_brpop_is_started_and_held_and_the_backlog_told(
    fetch: Fetch, redis_client: redis.Redis
) -> None:
    queue = f"q:{uuid.uuid4()}"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (first, second):
        record(job_id, queue)
        redis_client.lpush(queue, message(job_id, queue))
    popped = redis_client.rpop(queue)
    assert popped is not None
    got = fetch([queue], [], given=[(1, popped)])
    assert [(int(q), verdict) for q, verdict, _ in got] == [(1, "held")]
    assert fetch.backlog == 1  # type: ignore[attr-defined]
    job = jobs.store().get(first)
    assert job is not None and job.status == "active"
    assert redis_client.hlen(fetch.hash) == 1  # type: ignore[attr-defined]
    last = redis_client.rpop(queue)
    assert last is not None
    fetch([queue], [], given=[(1, last)])
    assert fetch.backlog == 0  # type: ignore[attr-defined]

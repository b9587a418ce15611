"""The worker's fetch script on its own, against the private Redis: what one call takes, holds,
starts, refuses and releases (with LMPOP, and with the RPOP loop older servers get)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from worker_app import keys
from worker_app.broker import envelope, registry
from worker_app.jobs import records

Fetch = Callable[..., list[list[Any]]]


@pytest.fixture
def raw(raw_redis: redis.Redis) -> redis.Redis:
    return raw_redis


@pytest.fixture(params=["lmpop", "rpop"])
def fetch(request: pytest.FixtureRequest, raw: redis.Redis) -> Fetch:
    source = registry.script("fetch").source
    if request.param == "rpop":
        old = "local lmpop = (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000"
        assert old in source
        source = source.replace(old, "local lmpop = false")
    sha = raw.script_load(source)

    def call(
        queues: list[str],
        orders: list[list[int]],
        acks: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
        hold: list[str] | None = None,
    ) -> list[list[Any]]:
        lists = [name for queue in queues for name in envelope.lists_of(queue)]
        args = registry.script("fetch").args(lists, [])[1:]
        now = time.time()
        reply = raw.evalsha(
            sha,
            *args,
            now,
            "2026-12-01T00:00:00+00:00",
            "worker-1",
            60,
            len(queues),
            len(envelope.PRIORITY_STEPS),
            len(orders),
            len(acks),
            *queues,
            *("1" if hold is None or q in hold else "0" for q in queues),
            *(position for order in orders for position in order),
            *(field for ack in acks for field in ack),
        )
        call.drained = reply[0]  # type: ignore[attr-defined]
        out = []
        for i in range(1, len(reply), 3):
            verdict, item = reply[i + 1].decode(), reply[i + 2]
            out.append([int(reply[i]), verdict, envelope.held_tag(item, verdict), item])
        return out

    return call


def message(job_id: str, queue: str, tag: Any = None, **headers: Any) -> bytes:
    return json.dumps(
        {
            "body": "",
            "headers": {"id": job_id, "task": "t", "retries": 0, "eta": None, **headers},
            "properties": {
                "delivery_tag": str(uuid.uuid4()) if tag is None else tag,
                "delivery_info": {"exchange": queue, "routing_key": queue},
            },
        }
    ).encode()


def record(job_id: str, queue: str) -> None:
    records.store().published(job_id, "t", queue, "pending", time.time(), 0, {}, reset=True)


def status(client: redis.Redis, job_id: str) -> str | None:
    value: Any = client.hget(keys.JOB + job_id, "status")
    return bytes(value).decode() if value else None


def test_takes_in_the_given_queue_order_and_priority_order_within_a_queue(
    fetch: Fetch, raw: redis.Redis
) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("a0", "a9", "b0", "b3")}
    raw.lpush("qa", message(ids["a0"], "qa"))
    raw.lpush(envelope.list_key("qa", 9), message(ids["a9"], "qa"))
    raw.lpush(envelope.list_key("qb", 5), message(ids["b3"], "qb"))
    raw.lpush("qb", message(ids["b0"], "qb"))
    for job_id in ids.values():
        record(job_id, "q")
    taken = fetch(["qa", "qb"], [[2, 1], [2, 1], [1, 2], [1, 2], [1, 2]])
    got = [json.loads(item)["headers"]["id"] for _, _, _, item in taken]
    assert got == [ids["b0"], ids["b3"], ids["a0"], ids["a9"]]
    assert [verdict for _, verdict, _, _ in taken] == ["held"] * 4
    assert fetch.drained == 1  # type: ignore[attr-defined]
    for position, _, tag, item in taken:
        queue = ["qa", "qb"][position - 1]
        assert json.loads(raw.hget(keys.HELD, tag) or b"null") == [json.loads(item), queue, queue]
        assert raw.zscore(keys.HELD_INDEX, tag) is not None
    assert all(status(raw, job_id) == "active" for job_id in ids.values())


def test_a_cancelled_job_is_dropped_and_items_that_are_no_message_are_held_raw(
    fetch: Fetch, raw: redis.Redis
) -> None:
    cancelled = str(uuid.uuid4())
    record(cancelled, "q")
    records.store().cancel(cancelled)
    bad = [b"not json", b'{"properties": {}}', message("x", "q", tag=7), b'{"a": "\xff\xfe"}']
    raw.lpush("q", message(cancelled, "q"), *bad)
    taken = fetch(["q"], [[1]] * 6)
    assert [verdict for _, verdict, _, _ in taken] == ["cancelled", "bad", "bad", "bad", "bad"]
    assert [item for _, verdict, _, item in taken if verdict == "bad"] == bad
    for _, _verdict, tag, item in taken[1:]:
        assert tag.startswith(keys.RAW_TAG)
        assert raw.hget(keys.HELD_RAW, tag) == b"q\n" + item
        assert raw.zscore(keys.HELD_INDEX, tag) is not None
    assert raw.hlen(keys.HELD) == 0


def test_acks_release_their_messages_and_end_the_jobs_as_they_ended(
    fetch: Fetch, raw: redis.Redis
) -> None:
    done, retried, ignored = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (done, retried, ignored):
        record(job_id, "q")
        raw.lpush("q", message(job_id, "q"))
    taken = fetch(["q"], [[1], [1], [1]])
    raw.lpush("q", b"junk")
    junk = fetch(["q"], [[1]])
    acks = [
        (taken[0][2], done, "succeeded"),
        (taken[1][2], retried, ""),  # its record moved on already (a retry, a failure)
        (taken[2][2], ignored, "ended"),  # Ignore or Reject: an active record ends failed
        (junk[0][2], "", ""),
    ]
    assert fetch(["q"], [], acks) == []
    assert raw.hlen(keys.HELD) == raw.hlen(keys.HELD_RAW) == raw.zcard(keys.HELD_INDEX) == 0
    assert status(raw, done) == "succeeded"
    assert raw.ttl(keys.JOB + done) > 0
    assert status(raw, retried) == "active"
    assert status(raw, ignored) == "failed"


def test_a_message_without_a_record_gets_one_marked_as_a_plain_celery_job(
    fetch: Fetch, raw: redis.Redis
) -> None:
    job_id = str(uuid.uuid4())
    body = json.dumps([[1, 2], {"k": "v"}, {}]).encode()
    envelope_ = json.loads(message(job_id, "q", task="foreign.add"))
    envelope_["body"] = __import__("base64").b64encode(body).decode()
    envelope_["properties"]["body_encoding"] = "base64"
    raw.lpush("q", json.dumps(envelope_))
    taken = fetch(["q"], [[1]])
    assert taken[0][1] == "held"
    record_ = records.store().get(job_id)
    assert record_ is not None
    assert (record_.type, record_.queue, record_.status) == ("foreign.add", "q", "active")
    assert record_.payload == {"args": [1, 2], "kwargs": {"k": "v"}}
    assert raw.hget(keys.JOB + job_id, "origin") == b"celery"
    # Its success is also stored where Celery's Redis result backend reads it.
    raw.hset(keys.JOB + job_id, "result", "3")
    fetch(["q"], [], [(taken[0][2], job_id, "succeeded")])
    meta = json.loads(raw.get(keys.CELERY_RESULT + job_id) or b"{}")
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", 3, job_id)


def test_an_empty_take_clears_wake_up_tokens_and_a_queue_without_acks_is_not_held(
    fetch: Fetch, raw: redis.Redis
) -> None:
    raw.lpush(keys.WAKE + "q", "", "")
    raw.lpush("replies", message("r1", "replies"))
    taken = fetch(["q", "replies"], [[1, 2], [1, 2]], hold=["q"])
    assert [verdict for _, verdict, _, _ in taken] == ["taken"]
    assert fetch.drained == 1  # type: ignore[attr-defined]
    assert raw.exists(keys.WAKE + "q") == 0
    assert raw.hlen(keys.HELD) == raw.zcard(keys.HELD_INDEX) == 0
    assert records.store().get("r1") is None


def test_script_and_python_agree_on_an_envelope_whose_text_is_not_utf8(
    fetch: Fetch, raw: redis.Redis
) -> None:
    job_id = str(uuid.uuid4())
    item = message(job_id, "q", note="caf\u00e9").replace(b"\\u00e9", b"\xe9")
    raw.lpush("q", item)
    taken = fetch(["q"], [[1]])
    assert taken[0][1] == "held"
    parsed = envelope.parse(taken[0][3])
    assert envelope.job_id(parsed) == job_id
    assert parsed["headers"]["note"] == "caf\udce9"  # the byte kept as it came


def test_a_plain_celery_message_with_an_eta_gets_a_scheduled_record(
    fetch: Fetch, raw: redis.Redis
) -> None:
    job_id = str(uuid.uuid4())
    raw.lpush("q", message(job_id, "q", task="foreign.later", eta="2030-01-01T00:00:00+00:00"))
    assert fetch(["q"], [[1]])[0][1] == "held"
    assert status(raw, job_id) == "scheduled"
    assert raw.hget(keys.JOB + job_id, "origin") == b"celery"


def test_a_message_the_script_cannot_record_is_held_raw_not_dropped(
    fetch: Fetch, raw: redis.Redis
) -> None:
    """cjson reads NaN but cannot write it back: the record's payload step fails."""
    job_id = str(uuid.uuid4())
    item = json.loads(message(job_id, "q", task="foreign.nan"))
    item["body"] = __import__("base64").b64encode(b"[[NaN], {}, {}]").decode()
    item["properties"]["body_encoding"] = "base64"
    raw.lpush("q", json.dumps(item))
    taken = fetch(["q"], [[1]])
    assert taken[0][1] in ("held", "bad")
    assert raw.hlen(keys.HELD) + raw.hlen(keys.HELD_RAW) == 1


def test_deaths_count_only_runs_that_died_and_three_in_a_row_make_a_poison_pill(
    fetch: Fetch, raw: redis.Redis
) -> None:
    from worker_app.broker.sweep import restore

    job_id = str(uuid.uuid4())
    record(job_id, "q")
    raw.lpush("q", message(job_id, "q", tag="t1"))
    deaths = keys.DEATHS + job_id

    def take() -> str:
        [[_, verdict, _, _]] = fetch(["q"], [[1]])
        return str(verdict)

    def died(why: str, started: bool) -> None:
        if started:
            fetch(["q"], [], acks=[("t1", job_id, "started")])
            assert raw.sismember(keys.RUNNING, "t1")
        assert [r.tag for r in restore(raw, ["t1"], head=False, why=why)] == ["t1"]
        assert not raw.sismember(keys.RUNNING, "t1")

    assert take() == "held"
    died("back", started=True)  # given back by a stopping worker: no death
    assert take() == "held"
    died("lost", started=False)  # its worker was lost before the task started: no death
    assert not raw.exists(deaths)
    assert take() == "held"
    died("lost", started=True)  # its worker was lost while running it
    assert take() == "held"
    died("died", started=False)  # its pool process died running it
    assert raw.get(deaths) == b"2"
    assert take() == "held"
    fetch(["q"], [], acks=[("t1", job_id, "")])  # a run that ended: the count starts over
    assert not raw.exists(deaths)
    raw.lpush("q", message(job_id, "q", tag="t1"))
    for _ in range(3):
        assert take() == "held"
        died("died", started=True)
    assert take() == "poison"  # held, for the worker to dead-letter
    assert raw.hexists(keys.HELD, "t1")

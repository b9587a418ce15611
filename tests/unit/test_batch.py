"""enqueue_many without a worker: validated before anything is published, and its messages are
byte for byte the ones Celery and kombu would build."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from kombu.utils.json import loads as kombu_loads

from tests.helpers import e2e_tasks
from worker_app import keys
from worker_app.errors import InvalidPayload, UnknownQueue
from worker_app.producer.client import enqueue_many


def test_one_invalid_payload_publishes_nothing(redis_client: redis.Redis) -> None:
    key = f"batch:{uuid.uuid4()}"
    before = redis_client.llen("default"), redis_client.zcard(keys.JOBS_INDEX)
    payloads = [{"key": key, "value": 1}, {"key": key, "value": -1}, {"key": key, "value": 2}]
    with pytest.raises(InvalidPayload, match="payload #1: invalid RecordPayload: value"):
        enqueue_many(e2e_tasks.record, payloads)
    with pytest.raises(UnknownQueue):
        enqueue_many(e2e_tasks.record, payloads[:1], queue="nope")
    assert (redis_client.llen("default"), redis_client.zcard(keys.JOBS_INDEX)) == before
    assert enqueue_many(e2e_tasks.record, []) == []


@pytest.mark.parametrize("countdown", [None, 1.0, 60.0])
def test_batch_messages_are_the_ones_celery_and_kombu_would_build(
    redis_client: redis.Redis, countdown: float | None
) -> None:
    """Every message of a batch equals what Celery's builder and kombu's envelope code make
    for that job, except the delivery tag and the enqueue time, which are the job's own."""
    import base64
    import json

    from worker_app.celery import app
    from worker_app.producer.publish import Outgoing, _Publisher, _Template

    kwargs = {"key": 'a "quoted" \\ key', "value": 7, "nested": {"list": [1, 2.5, None]}}
    connection: Any
    with app.pool.acquire(block=True) as connection:
        publisher = _Publisher(connection.default_channel, e2e_tasks.record, "low")
        template = _Template(publisher, countdown, None, {"traceparent": "00-abc-def-01"})
        job = Outgoing(str(uuid.uuid4()), kwargs)
        arguments, payload = template.encode(job)
        built = template.message(job, 1234.5, arguments)
        assert len(built) <= template.size_bound(arguments)
        headers, body, properties = publisher.message(job, countdown, None)
        # Values plain JSON cannot hold take kombu's typed encoding, as with .delay().
        when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        typed_job = Outgoing(str(uuid.uuid4()), {"when": when})
        typed_arguments, typed_payload = template.encode(typed_job)
        typed = template.message(typed_job, 1.0, typed_arguments)
    headers.update({"traceparent": "00-abc-def-01", keys.PUBLISHED_AT: 1234.5})
    headers[keys.FIRST_ENQUEUED_AT] = 1234.5
    # The due time is the template's (one batch, one countdown): compare against it.
    headers["eta"] = json.loads(built)["headers"]["eta"]
    key, expected, due = publisher.placement(headers, body, properties)
    assert key == template.key == "low"
    assert (due is not None) == (countdown is not None)
    ours, theirs = json.loads(built), json.loads(expected)
    assert ours["properties"].pop("delivery_tag") != theirs["properties"].pop("delivery_tag")
    assert ours == theirs
    assert json.loads(base64.b64decode(ours["body"])) == [[], kwargs, body[2]]
    assert json.loads(payload) == {"args": [], "kwargs": kwargs}
    typed_body = json.loads(typed)["body"]
    assert kombu_loads(base64.b64decode(typed_body))[1] == {"when": when}
    assert json.loads(typed_payload) == {"args": [], "kwargs": {"when": str(when)}}

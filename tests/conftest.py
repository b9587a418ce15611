"""Fixtures: a private redis-server for the session, and real worker processes.

The machine's shared Redis (127.0.0.1:6379) is never touched: the environment points every
process of the suite at a server this session started, before worker_app is configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers.data import BROKER_KEYS
from tests.helpers.env import child_env, isolate

isolate()

from tests.helpers.processes import API_TOKEN, ApiServer, Worker, own_server  # noqa: E402
from worker_app import keys  # noqa: E402
from worker_app.celery import app, reconfigure  # noqa: E402
from worker_app.cli.devredis import RedisServer  # noqa: E402
from worker_app.config import get_settings  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's private redis-server; the test process and its children use it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    os.environ["REDIS_URL"] = server.url
    get_settings.cache_clear()
    reconfigure(app, get_settings())
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (to stop, restart or fill), in its own scratch dir."""
    yield from own_server(tmp_path / "broker")


@pytest.fixture
def empty_redis(redis_client: redis.Redis) -> redis.Redis:
    """The session's Redis, flushed: whatever the test finds there, it wrote."""
    redis_client.flushdb()
    return redis_client


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private server that returns bytes, on a flushed database: scripts hand
    back items byte for byte."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.flushdb()  # what it left (held messages, records) must not reach a later worker
    client.close()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker on every configured queue, shared by the tests of one module."""
    proc = Worker(tmp_path_factory.mktemp("worker") / "worker.log", child_env()).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(
        tmp_path_factory.mktemp("api") / "api.log", child_env(API_TOKEN=API_TOKEN)
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def empty_product_data(redis_server: RedisServer) -> None:
    """No job data, dead letters or messages left by an earlier module on the session's Redis
    (for the modules that count them)."""
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(f"{keys.PREFIX}:*"):
        client.delete(key)
    client.delete(*BROKER_KEYS)
    client.close()

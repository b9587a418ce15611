"""Fixtures of the conformance suite: a worker shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.conformance import ConformanceWorker, worker_env
from worker_app.cli.devredis import RedisServer


@pytest.fixture(scope="module")
def conformance_worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConformanceWorker]:
    """A worker on ``critical,default,low`` with the suite's concurrency and its own ledger."""
    log = tmp_path_factory.mktemp("conformance-worker") / "worker.log"
    proc = ConformanceWorker(log, worker_env()).start()
    yield proc
    proc.stop()

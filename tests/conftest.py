"""Fixtures: a private redis-server for the session, and real worker processes.

The machine's shared Redis (127.0.0.1:6379) is never touched: the environment points every
process of the suite at a server this session started, before worker_app is configured.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Settings every process of the suite runs with: short delays so retries are quick to observe.
TEST_ENV = {
    "APP_ENV": "test",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "info",
    "ASYNQ_CONCURRENCY": "2",
    "ASYNQ_MAX_RETRY": "3",
    "ASYNQ_RETRY_BACKOFF": "200ms",
    "ASYNQ_RETRY_BACKOFF_MAX": "1s",
    "ASYNQ_TASK_TIMEOUT": "4s",
    "ASYNQ_SHUTDOWN_TIMEOUT": "5s",
}
# A placeholder until the private server is up; nothing connects before then.
os.environ.update(TEST_ENV, REDIS_URL="redis://127.0.0.1:1/0")
for _name in [n for n in os.environ if n.startswith("ASYNQ_") and n not in TEST_ENV]:
    del os.environ[_name]

from worker_app.celery import app, reconfigure  # noqa: E402
from worker_app.cli.devredis import RedisServer  # noqa: E402
from worker_app.config import get_settings  # noqa: E402


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


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


def own_server(folder: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    """A redis-server of a test's own, in ``folder`` (its scratch dir), stopped afterwards."""
    server = RedisServer(folder, appendonly=appendonly)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (to stop, restart or fill), in its own scratch dir."""
    yield from own_server(tmp_path / "broker")


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private server that returns bytes, on a flushed database: scripts hand
    back items byte for byte."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.flushdb()  # what it left (held messages, records) must not reach a later worker
    client.close()


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: the suite's settings plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNQ_")}
    env.update(TEST_ENV)
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


class Worker:
    """A real ``celery -A worker_app worker`` process writing its log to a file."""

    #: The module of tasks the worker loads beside worker_app's own.
    include = "tests.e2e_tasks"
    #: Start the worker in a session (process group) of its own.
    new_session = False

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        queues: str = "critical,default,low",
        concurrency: int | None = None,
        *,
        root: Path = ROOT,
        bin_dir: Path = BIN,
    ):
        self.log_path = log_path
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.root = root
        self.bin_dir = bin_dir
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        """The worker's node name, as Celery expands ``-n name@%h``."""
        import socket

        return f"{self.name}@{socket.gethostname()}"

    def start(self, timeout: float = 60.0) -> Self:
        argv = [
            str(self.bin_dir / "celery"),
            "-A",
            "worker_app",
            "worker",
            "--include",
            self.include,
            "-Q",
            self.queues,
            "-n",
            f"{self.name}@%h",
            "--without-mingle",
            "--without-gossip",
            *(["--concurrency", str(self.concurrency)] if self.concurrency else []),
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        wait_until(
            lambda: " ready." in self.log() or self.process.poll() is not None,  # type: ignore[union-attr]
            timeout,
            "the worker to be ready",
        )
        assert self.process.poll() is None, f"worker exited:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        """Log lines matching the regular expression ``pattern``."""
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class ReplayWorker(Worker):
    """A worker that also has ``replay.note``, a task no test process imports."""

    include = "tests.e2e_tasks,tests.replay_tasks"


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker on every configured queue, shared by the tests of one module."""
    proc = Worker(tmp_path_factory.mktemp("worker") / "worker.log", child_env()).start()
    yield proc
    proc.stop()


class ApiServer:
    """``uvicorn`` serving the job API on a free port, as a child process."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        from worker_app.cli.devredis import free_port

        self.port = free_port()
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        import httpx

        argv = [
            str(BIN / "uvicorn"),
            "tests.api_app:app",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert self.process is not None and self.process.poll() is None, (
                    self.log_path.read_text()
                )
                return False

        wait_until(up, 60, "the API to answer")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


API_TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(
        tmp_path_factory.mktemp("api") / "api.log", child_env(API_TOKEN=API_TOKEN)
    ).start()
    yield server
    server.stop()

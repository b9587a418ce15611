"""Real processes of the product for the tests: redis-servers, workers and the job API."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx

from tests.helpers.env import BIN, ROOT, wait_until
from worker_app.cli.devredis import RedisServer, free_port

API_TOKEN = "test-token-0123456789abcdef"


def own_server(folder: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    """A redis-server of a test's own, in ``folder`` (its scratch dir), stopped afterwards."""
    server = RedisServer(folder, appendonly=appendonly)
    server.start()
    yield server
    server.stop()


class Worker:
    """A real ``celery -A worker_app worker`` process writing its log to a file."""

    #: The module of tasks the worker loads beside worker_app's own.
    include = "tests.helpers.e2e_tasks"
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
        prefix: tuple[str, ...] | list[str] = (),
    ):
        self.log_path = log_path
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.root = root
        self.bin_dir = bin_dir
        #: Runs the worker through this command (``ip netns exec <host>``: another host).
        self.prefix = list(prefix)
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        """The worker's node name, as Celery expands ``-n name@%h``."""
        return f"{self.name}@{socket.gethostname()}"

    def start(self, timeout: float = 60.0) -> Self:
        argv = [
            *self.prefix,
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

    include = "tests.helpers.e2e_tasks,tests.helpers.replay_tasks"


class ApiServer:
    """``uvicorn`` serving the job API on a free port, as a child process."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        argv = [
            str(BIN / "uvicorn"),
            "tests.helpers.api_app:app",
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

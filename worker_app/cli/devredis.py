"""A private ``redis-server`` for development (and the test suite), started from PATH."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from worker_app.config import get_settings

DEV_DIR = Path(".dev")
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """Whether a Redis server answers PING at ``url`` within half a second."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    """A ``redis-server`` child process on a free port, with its data in ``directory``."""

    def __init__(self, directory: Path, *, appendonly: bool = True, password: str = "") -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        #: More ``redis-server`` arguments (``--replicaof host port``, ...).
        self.extra_args: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers.

        Raises:
            RuntimeError: redis-server is not on PATH or did not start in time.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.directory.resolve()),
            *(["--requirepass", self.password] if self.password else []),
            *self.extra_args,
        ]
        with open(self.directory / "redis.log", "ab") as log:
            # A session of its own: Ctrl-C in the terminal must not stop it before we do.
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start; see {self.directory / 'redis.log'}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _configured_explicitly() -> bool:
    return "REDIS_URL" in os.environ or any(
        line.strip().startswith("REDIS_URL=") for line in _dotenv_lines()
    )


def _dotenv_lines() -> list[str]:
    path = Path(".env")
    return path.read_text().splitlines() if path.is_file() else []


@contextmanager
def ensure_redis() -> Iterator[str | None]:
    """Yield the URL of a private Redis when development needs one, else None.

    A private server is started only in development, when ``REDIS_URL`` is not set and nothing
    answers at the default URL; it keeps its data under ``./.dev/`` with AOF and stops on exit.

    Raises:
        SystemExit: no Redis is reachable and none can be started.
    """
    settings = get_settings()
    if settings.app_env != "development" or _configured_explicitly() or answers(settings.redis_url):
        yield None
        return
    server = RedisServer(DEV_DIR)
    try:
        server.start()
    except RuntimeError as exc:
        raise SystemExit(
            f"error: no Redis answers at {settings.redis_url} and a private one could not be "
            f"started: {exc}; install redis-server or set REDIS_URL"
        ) from None
    print(f"dev: started a private redis-server at {server.url} (data in {DEV_DIR}/)", flush=True)
    try:
        yield server.url
    finally:
        server.stop()

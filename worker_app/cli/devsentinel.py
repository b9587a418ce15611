"""A local Redis Sentinel deployment for trying failover (and the test suite): one master, one
replica and three sentinels, each a ``redis-server`` child process on a free port (the same
binary runs Sentinel with ``--sentinel``), their data and configuration in one directory."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from worker_app.cli.devredis import DEV_DIR, START_TIMEOUT, RedisServer, free_port

#: The master's name the sentinels watch (``?master_name=`` of the URL).
MASTER_NAME = "mymaster"
#: Milliseconds without an answer before a sentinel thinks the master is down.
DOWN_AFTER_MS = 1000
#: Sentinels that must agree the master is down before one fails over.
QUORUM = 2


@dataclass(frozen=True)
class Tls:
    """The files of a TLS deployment: the authority's certificate, and the certificate and key
    every server presents (for 127.0.0.1)."""

    ca_cert: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """redis-server's TLS settings; clients need not present a certificate."""
        return [
            *("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)),
            *("--tls-ca-cert-file", str(self.ca_cert), "--tls-auth-clients", "no"),
            *("--tls-replication", "yes"),
        ]


class SentinelSet:
    """One master, one replica and three sentinels on 127.0.0.1.

    With ``tls``, the product reaches the sentinels and the servers by TLS only (the sentinels
    announce the servers' TLS ports, replication and the sentinels' own links use TLS); the
    plain ports stay for this class's own management calls.
    """

    def __init__(self, directory: Path, *, sentinels: int = 3, tls: Tls | None = None) -> None:
        self.directory = directory
        self.tls = tls
        self.master = RedisServer(directory / "a", appendonly=True)
        self.replica = RedisServer(directory / "b", appendonly=True)
        self.ports = [free_port() for _ in range(sentinels)]
        #: A server's TLS port, a sentinel's TLS port (by plain port), when ``tls``.
        self.tls_ports: dict[int, int] = {}
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``REDIS_URL`` for every process of the product: the sentinels and the master's name."""
        ports = [self.tls_ports.get(port, port) for port in self.ports]
        nodes = ";".join(f"sentinel://127.0.0.1:{port}" for port in ports)
        url = f"{nodes}/0?master_name={MASTER_NAME}"
        if self.tls is not None:
            url += f"&ssl=true&ssl_ca_certs={self.tls.ca_cert}"
        return url

    def announced(self, server: RedisServer) -> int:
        """The port the sentinels name ``server`` by."""
        return self.tls_ports.get(server.port, server.port)

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    def start(self) -> None:
        """Start the two servers and the sentinels; return once every sentinel sees both.

        Raises:
            RuntimeError: a process did not start, or the set did not form in time.
        """
        tls_args: list[str] = []
        if self.tls is not None:
            tls_args = self.tls.server_args()
            for port in [*self.ports, self.master.port, self.replica.port]:
                self.tls_ports[port] = free_port()
            self.master.extra_args = ["--tls-port", str(self.announced(self.master)), *tls_args]
        self.master.start()
        self.replica.extra_args = [
            *("--replicaof", "127.0.0.1", str(self.announced(self.master))),
            *(["--tls-port", str(self.announced(self.replica)), *tls_args] if tls_args else []),
        ]
        self.replica.start()
        for n, port in enumerate(self.ports):
            config = self.directory / f"sentinel-{n}.conf"
            tls_lines = "".join(
                f"{name.removeprefix('--')} {value}\n"
                for name, value in zip(tls_args[::2], tls_args[1::2], strict=True)
            )
            if tls_args:
                tls_lines += f"tls-port {self.tls_ports[port]}\n"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory.resolve()}\n{tls_lines}"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.announced(self.master)} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            with open(self.directory / f"sentinel-{n}.log", "ab") as log:
                self.processes.append(
                    subprocess.Popen(
                        ["redis-server", str(config), "--sentinel"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        self.wait_formed()

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.ports[n], socket_timeout=2, decode_responses=True)

    def master_port(self, n: int = 0) -> int:
        """The master's port as sentinel ``n`` names it."""
        address: Any = self.sentinel(n).sentinel_get_master_addr_by_name(MASTER_NAME)
        if not address:
            raise ValueError(f"sentinel {n} knows no master yet")
        return int(address[1])

    def current_master(self) -> RedisServer:
        port = self.master_port()
        return self.master if self.announced(self.master) == port else self.replica

    def wait_formed(self, timeout: float = 4 * START_TIMEOUT) -> None:
        """Until every sentinel names the same master, knows its replica and the other
        sentinels, and the replica's link is up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._formed():
                    return
            except (redis.RedisError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinel set did not form; see {self.directory}/*.log")
            time.sleep(0.1)

    def _formed(self) -> bool:
        ports = {self.master_port(n) for n in range(len(self.ports))}
        if len(ports) != 1:
            return False
        for n in range(len(self.ports)):
            fields: Any = self.sentinel(n).sentinel_master(MASTER_NAME)
            if not fields.get("is_master") or fields.get("is_sdown") or fields.get("is_odown"):
                return False
            if "failover" in str(fields.get("flags", "")):
                return False
            if int(fields.get("num-slaves", 0)) < 1:
                return False
            if int(fields.get("num-other-sentinels", 0)) < len(self.ports) - 1:
                return False
        replica = self.replica if ports == {self.announced(self.master)} else self.master
        if replica.process is None or replica.process.poll() is not None:
            return True  # the old master is gone; its replica role waits for its return
        role = redis.Redis.from_url(replica.url, socket_timeout=2).info("replication")
        return role.get("master_link_status") == "up"

    def failover(self) -> float:
        """A planned failover (``SENTINEL FAILOVER``); returns the seconds until every sentinel
        names the new master."""
        before = self.master_port()
        started = time.monotonic()
        self.sentinel().sentinel_failover(MASTER_NAME)
        self._wait_moved(before)
        return time.monotonic() - started

    def kill_master(self) -> RedisServer:
        """SIGKILL the master's process (writes it acknowledged but had not replicated are
        lost); returns the server killed."""
        victim = self.current_master()
        assert victim.process is not None
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        return victim

    def _wait_moved(self, before: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ports = {self.master_port(n) for n in range(len(self.ports))}
                if len(ports) == 1 and before not in ports:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not elect a new master in time")
            time.sleep(0.05)

    def wait_new_master(self, before: int, timeout: float = 30.0) -> None:
        """Until every sentinel names a master other than the one on port ``before``."""
        self._wait_moved(before, timeout)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        for server in self.servers:
            server.stop()


@contextmanager
def ensure_sentinel() -> Iterator[str]:
    """Yield the URL of a private Sentinel set (one master, one replica, three sentinels) with
    its data under ``./.dev/sentinel/``; it stops on exit.

    Raises:
        SystemExit: the set could not be started.
    """
    deployment = SentinelSet(DEV_DIR / "sentinel")
    try:
        deployment.start()
    except (RuntimeError, OSError) as exc:
        deployment.stop()
        raise SystemExit(f"error: a private Sentinel set could not be started: {exc}") from None
    print(
        f"dev: started a private Sentinel set (master 127.0.0.1:{deployment.master.port}, "
        f"replica 127.0.0.1:{deployment.replica.port}, sentinels on "
        f"{', '.join(str(p) for p in deployment.ports)}); REDIS_URL={deployment.url}; try "
        f"redis-cli -p {deployment.ports[0]} SENTINEL FAILOVER mymaster",
        flush=True,
    )
    try:
        yield deployment.url
    finally:
        deployment.stop()

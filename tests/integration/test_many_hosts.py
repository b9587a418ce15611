"""Many worker hosts against one Redis: each worker runs in a network namespace of its own (a
separate host on a bridge, reaching Redis over the network). Jobs spread across the hosts, each
host is seen, and a host cut off from the network for longer than the visibility timeout has its
jobs recovered by the others, then comes back without corrupting anything. Needs root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers.conformance import Flower
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.netns import Network
from tests.helpers.processes import Worker
from tests.helpers.spots import Spots
from worker_app import keys
from worker_app.cli.devredis import RedisServer

pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

HOSTS = 3
VISIBILITY = 4.0  # seconds: the cut lasts longer


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(HOSTS)
    try:
        net.start()
        yield net
    finally:
        net.stop()


@pytest.fixture
def server(network: Network, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server the hosts reach at the bridge's address (and the test at 127.0.0.1)."""
    own = RedisServer(tmp_path / "redis", appendonly=False)
    own.extra_args = ["--bind", "127.0.0.1", network.gateway, "--protected-mode", "no"]
    own.start()
    yield own
    own.stop()


class Hosts:
    """One worker per host, and the file their jobs note their runs in."""

    def __init__(self, network: Network, server: RedisServer, tmp_path: Path) -> None:
        self.network, self.server = network, server
        self.spot_file = tmp_path / "spots"
        self.env = child_env(
            REDIS_URL=f"redis://{network.gateway}:{server.port}/0",
            SPOT_FILE=str(self.spot_file),
            ASYNQ_VISIBILITY_TIMEOUT=f"{VISIBILITY:g}s",
            ASYNQ_TASK_TIMEOUT="30s",
        )
        self.workers = [
            Worker(tmp_path / f"host-{n}.log", self.env, concurrency=2, prefix=network.prefix(n))
            for n in range(HOSTS)
        ]
        self.client = redis.Redis(port=server.port, decode_responses=True)

    def __enter__(self) -> Hosts:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        for worker in self.workers:
            worker.stop()

    def publish(self, run: str, count: int, seconds: float) -> list[str]:
        """``count`` ``e2e.spot`` jobs by ``.delay()`` from a producer on the machine."""
        code = (
            "import json, sys\nfrom tests.helpers import e2e_tasks\n"
            f"print(json.dumps([e2e_tasks.spot.delay({run!r}, {seconds}).id "
            f"for _ in range({count})]))"
        )
        env = child_env(REDIS_URL=f"redis://127.0.0.1:{self.server.port}/0")
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
        return ids

    def spots(self) -> list[tuple[str, str, str, float]]:
        return Spots(self.spot_file).lines()

    def ended(self) -> set[str]:
        return Spots(self.spot_file).ended()

    def held_by(self, node: str) -> set[str]:
        """Jobs whose records say ``node`` holds them (active: running or reserved)."""
        held: set[str] = set()
        for key in self.client.scan_iter(f"{keys.JOB}*"):
            status, worker, job_id = self.client.hmget(key, "status", "worker", "id")
            if status == "active" and worker == node and job_id:
                held.add(str(job_id))
        return held


def test_jobs_spread_across_hosts_and_every_host_is_seen(
    network: Network, server: RedisServer, tmp_path: Path
) -> None:
    with Hosts(network, server, tmp_path) as hosts:
        ids = hosts.publish("spread", 300, 0.02)
        wait_until(lambda: set(ids) <= hosts.ended(), 60, "every job to run")
        per_host = Counter(node for what, _, node, _ in hosts.spots() if what == "end")
        print(f"\njobs per host: {dict(per_host)}")
        assert set(per_host) == {worker.node for worker in hosts.workers}
        assert sum(per_host.values()) == len(ids)  # each ran once
        env = child_env(REDIS_URL=f"redis://127.0.0.1:{server.port}/0")
        for worker in hosts.workers:
            health = subprocess.run(
                [str(BIN / "worker-app"), "health", "--node", worker.node],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            assert health.returncode == 0, health.stdout + health.stderr
        online = {
            key.removeprefix(keys.WORKER) for key in hosts.client.scan_iter(f"{keys.WORKER}*")
        }
        assert {worker.node for worker in hosts.workers} <= online
        # Flower, on this machine, lists every host's worker (they answer its broadcast).
        flower = Flower(tmp_path / "flower.log", env).launch().wait_up()
        try:

            def listed() -> bool:
                workers = flower.get("/api/workers", refresh="1")
                return workers.status_code == 200 and {w.node for w in hosts.workers} <= set(
                    workers.json()
                )

            wait_until(listed, 30, "Flower to list every host's worker")
        finally:
            flower.stop()


def test_a_host_cut_off_longer_than_the_visibility_timeout(
    network: Network, server: RedisServer, tmp_path: Path
) -> None:
    with Hosts(network, server, tmp_path) as hosts:
        cut_node = hosts.workers[0].node
        ids = hosts.publish("cut", 60, 1.0)
        wait_until(lambda: len(hosts.held_by(cut_node)) >= 2, 30, "the first host to hold jobs")
        held = hosts.held_by(cut_node)
        cut_at = time.time()
        network.cut(0)
        try:
            # Recovered: each job the host held starts on another host.
            def recovered() -> bool:
                elsewhere = {
                    job_id
                    for what, job_id, node, _ in hosts.spots()
                    if what == "start" and node != cut_node
                }
                return held <= elsewhere

            wait_until(recovered, 4 * VISIBILITY + 20, "the cut host's jobs to run elsewhere")
            starts: dict[str, list[tuple[str, float]]] = defaultdict(list)
            for what, job_id, node, at in hosts.spots():
                if what == "start":
                    starts[job_id].append((node, at))
            recovery = max(
                min(at for node, at in starts[job_id] if node != cut_node) - cut_at
                for job_id in held
            )
            time.sleep(max(0.0, VISIBILITY + 2 - (time.time() - cut_at)))
        finally:
            network.heal(0)
        healed_at = time.time()
        wait_until(lambda: set(ids) <= hosts.ended(), 90, "every job to run")
        time.sleep(VISIBILITY)  # the healed host's acks and sweeps settle
        spots = hosts.spots()
        runs = Counter(job_id for what, job_id, _, _ in spots if what == "start")
        twice = {job_id for job_id, n in runs.items() if n > 1}
        ended_elsewhere = {
            job_id: at for what, job_id, node, at in spots if what == "end" and node != cut_node
        }
        late = [
            job_id
            for what, job_id, node, at in spots
            if what == "start"
            and node == cut_node
            and at > healed_at
            and job_id in ended_elsewhere
            and ended_elsewhere[job_id] < at
        ]
        statuses = Counter(hosts.client.hget(f"{keys.JOB}{job_id}", "status") for job_id in ids)
        figures: dict[str, Any] = {
            "held_by_cut_host": len(held),
            "recovered_within_s": round(recovery, 2),
            "ran_twice": len(twice),
            "statuses": dict(statuses),
            "per_host": dict(Counter(node for what, _, node, _ in spots if what == "end")),
            "started_after_success_elsewhere": len(late),
        }
        print(f"\npartition figures: {figures}")
        assert recovery < VISIBILITY * 1.5 + 3
        assert twice <= held  # only what the cut host held can have run twice
        # Nothing the cut host held starts there after the heal once it ran elsewhere: the
        # worker and its pool processes check their lease renewals before a job starts.
        assert late == []
        assert statuses == {"succeeded": len(ids)}
        assert hosts.client.hlen("unacked") == 0

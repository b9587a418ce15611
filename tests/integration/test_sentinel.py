"""Redis Sentinel: a failover while jobs are in flight. A producer publishes by ``.delay()`` at
a steady rate through Sentinel, two workers drain, and the master changes under them; every job
whose publish was acknowledged runs, and the figures are printed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.helpers.beat import Beat
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from tests.helpers.tls import make_tls
from worker_app import keys
from worker_app.cli.devredis import RedisServer, free_port
from worker_app.cli.devsentinel import SentinelSet

pytestmark = pytest.mark.fault

JOBS = 2000
RATE = 400.0  # publishes per second: the failover lands in the middle of the run
VISIBILITY = "10s"


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    deployment = SentinelSet(tmp_path / "sentinel")
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A set the product reaches by TLS only (``?ssl=true&ssl_ca_certs=...``)."""
    deployment = SentinelSet(tmp_path / "sentinel", tls=make_tls(tmp_path / "tls"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def _producer(run: str, env: dict[str, str], stop_file: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.helpers.steady_producer", run, str(JOBS), str(RATE)]
    return subprocess.Popen(
        [*argv, str(stop_file)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


class ApiLoad:
    """``POST /api/jobs`` every 20 ms from a thread of the test: answers by status code, and the
    ids of the jobs it accepted."""

    def __init__(self, api: ApiServer, run: str) -> None:
        self.api, self.run = api, run
        self.codes: Counter[int] = Counter()
        self.accepted: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._post, daemon=True)

    def _post(self) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        body = {"type": "e2e.ledger", "payload": {"run": self.run}}
        with httpx.Client(base_url=self.api.url, headers=headers, timeout=15) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.post("/api/jobs", json=body)
                except httpx.HTTPError:
                    self.codes[0] += 1  # no answer at all
                else:
                    self.codes[answer.status_code] += 1
                    if answer.status_code == 202:
                        self.accepted.append(answer.json()["id"])
                time.sleep(0.02)

    def __enter__(self) -> ApiLoad:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(30)


def _slots_sent(beat: Beat) -> list[str]:
    """The slot ids the scheduler sent. A slot is its job's id: sent once, unless the master
    that took it lost it in the failover (a write in its last second, not replicated), in which
    case the scheduler sends it again to the new one."""
    return [
        line.rsplit(" ", 1)[1] for line in beat.log().splitlines() if ": enqueued periodic:" in line
    ]


def _ledger_counts(ledger: redis.Redis, run: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in ledger.hgetall(f"ledger:{run}").items()}


def _through_a_failover(
    sentinels: SentinelSet,
    redis_server: RedisServer,
    tmp_path: Path,
    switch: Any,
) -> dict[str, Any]:
    run = uuid.uuid4().hex
    ledger = redis.Redis.from_url(redis_server.url, decode_responses=True)
    # A held message whose ack the dead master had not replicated comes back after this.
    env = child_env(
        REDIS_URL=sentinels.url, LEDGER_URL=redis_server.url, ASYNQ_VISIBILITY_TIMEOUT=VISIBILITY
    )
    # A periodic job every second through the failover: each slot runs once.
    # (On `critical`: behind the load on `default`, a pending slot would make the next ones skip.)
    every_second = {"name": f"tick-{run}", "task": "e2e.ledger", "every": "1s", "queue": "critical"}
    beat = Beat(
        tmp_path / "beat.log",
        [{**every_second, "payload": {"run": f"{run}-beat"}}],
        REDIS_URL=sentinels.url,
        LEDGER_URL=redis_server.url,
        ASYNQ_VISIBILITY_TIMEOUT=VISIBILITY,
    ).start()
    workers: list[Worker] = []
    api = ApiServer(tmp_path / "api.log", child_env(REDIS_URL=sentinels.url, API_TOKEN=API_TOKEN))
    producer: subprocess.Popen[str] | None = None
    stop_file = tmp_path / "stop"
    try:
        workers += [
            Worker(tmp_path / f"worker-{n}.log", env, concurrency=2).start() for n in (1, 2)
        ]
        api.start()
        # Beat runs before the switch. (A schedule lost with the writes of beat's first moments:
        # test_periodic.py, test_beat_writes_its_schedule_again_when_the_master_lost_it.)
        wait_until(lambda: _slots_sent(beat), 60, "beat to send its first slot")
        producer = _producer(run, env, stop_file)
        with ApiLoad(api, run) as load:
            quarter = JOBS // 4
            wait_until(
                lambda: len(_ledger_counts(ledger, run)) >= quarter, 60, "a quarter of the jobs"
            )
            switched_at = time.monotonic()
            switch()
            out, _ = producer.communicate(timeout=180)
            before = load.codes[202]
            wait_until(lambda: load.codes[202] > before + 5, 30, "the API to accept jobs again")
        # The scheduler goes on after the switch: three more slots sent. (A slot whose ack the
        # dead master had not replicated stays active until its lease lapses: the schedule skips
        # meanwhile, as for any run still going.)
        sent_before = len(_slots_sent(beat))
        beat_waited = time.monotonic()
        try:
            wait_until(lambda: len(_slots_sent(beat)) >= sent_before + 3, 60, "beat to send again")
        except BaseException:
            master = redis.Redis(port=sentinels.current_master().port, decode_responses=True)
            zset = f"{keys.BEAT}:schedule"
            members = [str(key) for key in master.zrange(zset, 0, -1)]
            schedule = {key: (master.zscore(zset, key), master.hgetall(key)) for key in members}
            print(f"\nbeat's schedule {schedule} at {time.time():.1f}, threads and log:")
            print(beat.stacks())
            raise
        beat_back_after = time.monotonic() - beat_waited
        report = json.loads(out.strip().splitlines()[-1])
        acknowledged = set(report["ids"]) | set(load.accepted)
        wait_until(
            lambda: acknowledged <= set(_ledger_counts(ledger, run)), 120, "every acknowledged job"
        )
        # Every job's record ends succeeded, those run after the switch too (the workers keep
        # the product's transport across the reconnect).
        master = redis.Redis(port=sentinels.current_master().port, decode_responses=True)

        def unfinished() -> set[str]:
            return {
                job
                for job in acknowledged
                if master.hget(f"{keys.JOB}{job}", "status") != "succeeded"
            }

        deadline = time.monotonic() + 60
        while unfinished() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = unfinished()
        assert not left, Counter(
            str(master.hmget(f"{keys.JOB}{job}", "status", "worker", "attempt")) for job in left
        )
        counts = _ledger_counts(ledger, run)
        slots = _ledger_counts(ledger, f"{run}-beat")
        resent = {slot for slot, n in Counter(_slots_sent(beat)).items() if n > 1}
        # A slot's job is a job: an ack or a hold the old master had not replicated runs it
        # again, as any job's; it is also sent again when the old master lost its first send.
        # Either way a slot runs at most twice.
        assert all(n <= 2 for n in slots.values()), slots
        figures = {
            "acknowledged": len(acknowledged),
            "lost": len(acknowledged - set(counts)),
            "ran_twice": sum(1 for n in counts.values() if n > 1),
            "seconds_without_service": round(report["longest_gap"], 2),
            "publish_errors": report["errors"],
            "after_switch": round(time.monotonic() - switched_at, 1),
            "api_answers": dict(load.codes),
            "periodic_slots_sent": len(_slots_sent(beat)),
            "beat_sent_3_more_within_s": round(beat_back_after, 1),
            "periodic_slots_run": len(slots),
            "periodic_slots_run_twice": sum(1 for n in slots.values() if n > 1),
            "periodic_slots_sent_again": len(resent),
        }
        print(f"\nfailover figures: {figures}")
        return figures
    finally:
        stop_file.touch()
        if producer is not None and producer.poll() is None:
            producer.kill()
        for worker in workers:
            worker.stop()
        api.stop()
        beat.stop()


def test_a_planned_failover_loses_no_acknowledged_job(
    sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    figures = _through_a_failover(sentinels, redis_server, tmp_path, sentinels.failover)
    assert figures["acknowledged"] >= JOBS
    assert figures["lost"] == 0
    assert figures["seconds_without_service"] < 10
    assert set(figures["api_answers"]) <= {202, 503}


def test_the_master_killed_mid_run_loses_no_acknowledged_job(
    sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    def kill() -> None:
        before = sentinels.master_port()
        sentinels.kill_master()
        sentinels.wait_new_master(before)

    figures = _through_a_failover(sentinels, redis_server, tmp_path, kill)
    assert figures["acknowledged"] >= JOBS
    assert figures["lost"] == 0
    assert figures["seconds_without_service"] < 15
    assert set(figures["api_answers"]) <= {202, 503}


def test_a_planned_failover_over_tls_loses_no_acknowledged_job(
    tls_sentinels: SentinelSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Every process reaches the sentinels and the master by TLS, verifying their certificate
    against the URL's authority; the same load goes through a planned failover."""
    figures = _through_a_failover(tls_sentinels, redis_server, tmp_path, tls_sentinels.failover)
    assert figures["acknowledged"] >= JOBS
    assert figures["lost"] == 0
    assert figures["seconds_without_service"] < 10
    assert set(figures["api_answers"]) <= {202, 503}


def _starts(command: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = child_env(REDIS_URL=url)
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


PROCESSES = {
    "worker": [str(BIN / "celery"), "-A", "worker_app", "worker"],
    "beat": [str(BIN / "celery"), "-A", "worker_app", "beat"],
    "api": [str(BIN / "uvicorn"), "worker_app.api:app", "--port", "0"],
    "cli": [str(BIN / "worker-app"), "queues"],
    "flower": [str(BIN / "celery"), "-A", "worker_app", "flower", f"--port={free_port()}"],
}


@pytest.mark.parametrize("process", list(PROCESSES))
def test_sentinels_that_do_not_answer_stop_every_process_with_one_line(process: str) -> None:
    port = free_port()
    done = _starts(PROCESSES[process], f"sentinel://127.0.0.1:{port}/0?master_name=mymaster")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: REDIS_URL: no Sentinel answers at 127.0.0.1:{port}"], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("process", list(PROCESSES))
def test_a_wrong_master_name_stops_every_process_with_one_line(
    process: str, sentinels: SentinelSet
) -> None:
    url = sentinels.url.replace("master_name=mymaster", "master_name=other")
    done = _starts(PROCESSES[process], url)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "know no master named 'other'" in errors[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_tls_sentinels_reached_without_tls_stop_a_process_with_one_line(
    tls_sentinels: SentinelSet,
) -> None:
    url = tls_sentinels.url.split("&ssl=")[0]
    done = _starts(PROCESSES["worker"], url)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no Sentinel answers at" in errors[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_compose_sentinel_configuration_runs_and_finds_the_master(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The script compose's Sentinels start with, run here against the session's Redis (its
    host, port and file moved): the Sentinel it starts names that server as master ``main``."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    script: str = data["services"]["sentinel-1"]["command"][0]
    port = free_port()
    config = tmp_path / "sentinel.conf"
    script = (
        script.replace("port 26379", f"port {port}")
        .replace("main redis 6379", f"main 127.0.0.1 {redis_server.port}")
        .replace("/tmp/sentinel.conf", str(config))
    )
    with open(tmp_path / "sentinel.log", "wb") as log:
        process = subprocess.Popen(["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)

        def found() -> bool:
            try:
                return bool(client.sentinel_get_master_addr_by_name("main"))
            except redis.RedisError:
                return False

        wait_until(found, 30, "the sentinel to name the master")
        address: Any = client.sentinel_get_master_addr_by_name("main")
        assert (address[0], int(address[1])) == ("127.0.0.1", redis_server.port)
    finally:
        process.terminate()
        process.wait(10)

"""Upgrade without loss: a Redis filled by the release before the broker-core rewrite (commit
07153d3, run from its own tree with its locked dependencies in a virtualenv of its own) is taken
over by this release's worker: every waiting, parked and held job runs exactly once, and the old
job records are still listed."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.group_worker import GroupWorker
from tests.helpers.processes import Worker
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault

RELEASE = "07153d3"
#: The e2e tasks the test runs with both releases: each must exist in both trees.
TASKS = ("e2e.ledger", "e2e.sleepy", "e2e.permanent")
QUEUES = ("critical", "default", "low")
LEASE = 4.0  # ASYNQ_VISIBILITY_TIMEOUT of both releases' workers, seconds
SWEEP = 1.0  # one restore sweep
LONG_JOB = 3.0  # seconds a held job runs (under the suite's 4 s task timeout)
FILL = ROOT / "tests" / "helpers" / "upgrade_fill.py"
#: The release's e2e tasks, in its own layout of the tests.
RELEASE_TASKS = "tests.e2e_tasks"
JOB = "worker_app:job:"


def _run(argv: list[str], what: str, **options: Any) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, capture_output=True, check=False, **options)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return done


def build_release(home: Path) -> None:
    """Export the release's tree into ``home`` and install its locked dependencies (not the
    project itself: PYTHONPATH points at the tree) into ``home/.venv``, offline from uv's
    cache."""
    uv = ROOT / ".tools" / "bin" / "uv"
    if not uv.exists():
        pytest.fail(f"{uv} is missing: run `make install` first")
    home.mkdir(parents=True)
    archive = _run(["git", "-C", str(ROOT), "archive", RELEASE], f"git archive {RELEASE}")
    _run(["tar", "-x", "-C", str(home)], "tar", input=archive.stdout)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(home / ".venv")
    base_python = getattr(sys, "_base_executable", sys.executable)
    argv = [str(uv), "sync", "--frozen", "--offline", "--no-default-groups"]
    argv += ["--no-install-project", "--project", str(home), "--python", base_python]
    _run(argv, "uv sync of the old release", env=env, cwd=home, timeout=600)


@pytest.fixture(scope="session")
def old_release() -> Path:
    """The release's tree with its virtualenv, built once per machine under the temp dir (a
    lock keeps concurrent sessions from building it twice) and reused by later sessions."""
    home = Path(tempfile.gettempdir()) / f"worker-app-release-{RELEASE}"
    with open(f"{home}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / ".built").exists():
            shutil.rmtree(home, ignore_errors=True)
            started = time.monotonic()
            build_release(home)
            (home / ".built").touch()
            print(f"built release {RELEASE} in {home} in {time.monotonic() - started:.0f}s")
    for name in TASKS:
        for tasks_file in (home / "tests" / "e2e_tasks.py", Path(e2e_tasks.__file__)):
            assert f'name="{name}"' in tasks_file.read_text(), f"{name} is not in {tasks_file}"
    return home


class OldRelease:
    """Processes of the old release against one Redis."""

    def __init__(self, home: Path, url: str) -> None:
        self.home = home
        self.env = child_env(
            REDIS_URL=url,
            LEDGER_URL=url,
            ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE:g}s",
            PYTHONPATH=str(home),
        )

    def publish(self, task: str, calls: list[list[Any]], **options: Any) -> list[str]:
        """Publish one ``task`` job per argument list with the old release; their ids."""
        spec = json.dumps({"task": task, "calls": calls, "options": options})
        python = str(self.home / ".venv" / "bin" / "python")
        argv = [python, "-c", FILL.read_text(), "publish", spec]
        out = _run(argv, "publishing with the old release", cwd=self.home, env=self.env)
        ids_line, module = out.stdout.decode().strip().splitlines()[-2:]
        assert Path(module).is_relative_to(self.home), f"the old release imported {module}"
        ids: list[str] = json.loads(ids_line)
        return ids

    def worker(self, log_path: Path) -> GroupWorker:
        worker = GroupWorker(
            log_path, self.env, root=self.home, bin_dir=self.home / ".venv" / "bin"
        )
        worker.include = RELEASE_TASKS
        return worker


def records(url: str, ids: list[str]) -> dict[str, Any]:
    """The records of ``ids`` as this release's ``worker_app.jobs.records.store()`` reads them."""
    env = child_env(REDIS_URL=url)
    argv = [str(BIN / "python"), "-c", FILL.read_text(), "records", json.dumps(ids)]
    out = _run(argv, "reading records with this release", cwd=ROOT, env=env)
    found: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return found


def final_records(
    old: OldRelease, client: redis.Redis, tmp_path: Path, run: str
) -> tuple[list[str], list[str]]:
    """Succeeded and failed (dead-lettered) records, made by an old worker."""
    finished = old.publish("e2e.ledger", [[f"finished:{run}"]] * 3)
    failed = old.publish("e2e.permanent", [[f"failed:{run}:{n}"] for n in range(2)])
    worker = old.worker(tmp_path / "old-final.log").start()
    try:

        def settled() -> bool:
            statuses = [client.hget(JOB + i, "status") for i in finished + failed]
            return statuses == ["succeeded"] * len(finished) + ["failed"] * len(failed)

        wait_until(settled, 60, "the old worker to finish and fail its jobs")
    finally:
        worker.stop()
    return finished, failed


def held_jobs(old: OldRelease, client: redis.Redis, tmp_path: Path, run: str) -> list[str]:
    """Long jobs an old worker is running (or holds beyond its slots) when it is SIGKILLed;
    their keys, each a list of the job's attempts."""
    keys = [f"held:{run}:{n}" for n in range(4)]
    worker = old.worker(tmp_path / "old-killed.log").start()
    try:
        old.publish("e2e.sleepy", [[key, LONG_JOB] for key in keys], queue="default")
        wait_until(lambda: sum(client.llen(key) for key in keys) >= 2, 30, "two long jobs to start")
        deadline = time.monotonic() + 2.0
        while client.hlen("unacked") < len(keys) and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.kill()
    finally:
        worker.stop()
    return keys


@pytest.mark.timeout(900)
def test_the_new_worker_takes_over_what_the_previous_release_left(
    tmp_path: Path, old_release: Path, broker: RedisServer
) -> None:
    client = redis.Redis.from_url(broker.url, decode_responses=True)
    old = OldRelease(old_release, broker.url)
    run = uuid.uuid4().hex
    taken = f"taken:{run}"  # the ledger of the waiting and parked jobs

    finished, failed = final_records(old, client, tmp_path, run)
    held_keys = held_jobs(old, client, tmp_path, run)
    waiting = [i for q in QUEUES for i in old.publish("e2e.ledger", [[taken]] * 4, queue=q)]
    parked = [
        i for q in QUEUES for i in old.publish("e2e.ledger", [[taken]] * 2, queue=q, countdown=5)
    ]

    left = {
        **{f"list {q}": client.llen(q) for q in QUEUES},
        "parked (worker_app:delayed)": client.zcard("worker_app:delayed"),
        "held (unacked)": client.hlen("unacked"),
    }
    attempts_before = {key: client.llen(key) for key in held_keys}
    print(f"left by release {RELEASE}: {left}; long jobs started {attempts_before}")
    # A long job the killed worker had not taken yet waits on ``default`` with the others.
    assert [left[f"list {q}"] for q in QUEUES] == [4, 4 + 4 - left["held (unacked)"], 4]
    assert left["parked (worker_app:delayed)"] == len(parked)
    assert left["held (unacked)"] >= 2, "the killed old worker held no job"

    lease = f"{LEASE:g}s"
    new_env = child_env(REDIS_URL=broker.url, LEDGER_URL=broker.url, ASYNQ_VISIBILITY_TIMEOUT=lease)
    new = Worker(tmp_path / "new.log", new_env).start()
    try:

        def all_ran() -> bool:
            done = client.hgetall(f"ledger:{taken}")
            return all(i in done for i in waiting + parked) and all(
                client.exists(f"done:{key}") for key in held_keys
            )

        deadline = time.monotonic() + 60
        while not all_ran() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(LEASE + SWEEP)  # a second run would show up by now
    finally:
        new.stop()
    runs = {str(k): int(v) for k, v in client.hgetall(f"ledger:{taken}").items()}
    held_runs = {key: client.llen(key) - attempts_before[key] for key in held_keys}
    client.close()
    found = records(broker.url, finished + failed + waiting + parked)
    statuses, listed = found["statuses"], found["listed"]

    print(
        f"new worker: waiting jobs run {[runs.get(i, 0) for i in waiting]}, "
        f"parked {[runs.get(i, 0) for i in parked]}, held {list(held_runs.values())} times; "
        f"{len(new.lines('recovered'))} recovered from the lost old worker"
    )
    print(
        f"old records: succeeded {[statuses[i] for i in finished]}, "
        f"failed {[statuses[i] for i in failed]}; listed as succeeded "
        f"{sum(i in listed['succeeded'] for i in finished)}/{len(finished)}, as failed "
        f"{sum(i in listed['failed'] for i in failed)}/{len(failed)}"
    )
    assert [runs.get(i, 0) for i in waiting] == [1] * len(waiting), "waiting jobs"
    assert [runs.get(i, 0) for i in parked] == [1] * len(parked), "parked jobs"
    assert list(held_runs.values()) == [1] * len(held_keys), "held jobs"
    assert {statuses[i] for i in waiting + parked} == {"succeeded"}
    assert [statuses[i] for i in finished] == ["succeeded"] * len(finished)
    assert [statuses[i] for i in failed] == ["failed"] * len(failed)
    assert set(finished) <= set(listed["succeeded"]) and set(failed) <= set(listed["failed"])

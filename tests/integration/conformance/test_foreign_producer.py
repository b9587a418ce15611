"""A producer that does not import worker_app (another service's plain ``Celery(broker=...)``,
any ``priority``) is consumed, its jobs are tracked, and its own ``.get()`` returns."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
import redis

from tests.helpers.conformance import ConformanceWorker, executions, poll, shown
from tests.helpers.env import BIN, ROOT, child_env
from tests.helpers.processes import API_TOKEN, ApiServer
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.conformance

PRODUCER = ROOT / "tests" / "helpers" / "foreign_producer.py"
JOBS = 1500
#: Seconds the producer's ``.get()`` calls may take together.
GET_BUDGET = 60


def by_priority(jobs: Iterable[dict[str, Any]]) -> str:
    counts = Counter(str(job["priority"]) for job in jobs)
    return ", ".join(f"priority {p}: {n}" for p, n in sorted(counts.items()))


def listed(http: httpx.Client, **filters: str) -> set[str]:
    """Every job id ``GET /api/jobs`` lists with ``filters``, following ``next_cursor``."""
    ids: set[str] = set()
    params: dict[str, str | int] = {**filters, "limit": 500}
    while True:
        answer = http.get("/api/jobs", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        ids.update(job["id"] for job in page["jobs"])
        if not page["next_cursor"]:
            return ids
        params["cursor"] = page["next_cursor"]


def api_problems(http: httpx.Client, jobs: list[dict[str, Any]]) -> list[str]:
    """What ``GET /api/jobs/{id}`` and the succeeded listing get wrong about ``jobs``."""
    unknown: list[dict[str, Any]] = []
    wrong: list[str] = []
    for job in jobs:
        answer = http.get(f"/api/jobs/{job['id']}")
        if answer.status_code == 404:
            unknown.append(job)
            continue
        record = answer.json()
        seen = (answer.status_code, record.get("status"), record.get("queue"), record.get("result"))
        if seen != (200, "succeeded", job["queue"], 2 * job["n"]):
            wrong.append(f"{job['id']} (priority {job['priority']}): {seen}")
    problems = []
    if unknown:
        problems.append(
            f"GET /api/jobs/{{id}} answers 404 for {len(unknown)} of {JOBS} jobs "
            f"({by_priority(unknown)})"
        )
    if wrong:
        problems.append(
            f"GET /api/jobs/{{id}} is not (200, 'succeeded', queue, result) for {len(wrong)} "
            f"jobs, e.g. {wrong[:3]}"
        )
    missing = {job["id"] for job in jobs} - listed(http, status="succeeded")
    if missing:
        problems.append(f"GET /api/jobs?status=succeeded lacks {len(missing)} of {JOBS} jobs")
    return problems


@pytest.mark.timeout(GET_BUDGET + 120)
def test_a_plain_celery_producer_with_any_priority_is_run_tracked_and_answered(
    conformance_worker: ConformanceWorker,
    api: ApiServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
) -> None:
    done = subprocess.run(
        [
            str(BIN / "python"),
            str(PRODUCER),
            "--redis-url",
            redis_server.url,
            "--budget",
            str(GET_BUDGET),
        ],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=GET_BUDGET + 60,
    )
    assert done.returncode == 0, shown(done)
    jobs: list[dict[str, Any]] = json.loads(done.stdout)["jobs"]
    assert len({job["id"] for job in jobs}) == JOBS
    ids = {job["id"] for job in jobs}
    # Whatever the worker runs, it has had the producer's whole budget to run it.
    poll(lambda: ids <= set(executions(redis_client, conformance_worker)), 5)
    runs = executions(redis_client, conformance_worker)

    problems: list[str] = []
    never = [job for job in jobs if runs[job["id"]] == 0]
    if never:
        problems.append(f"{len(never)} of {JOBS} jobs never ran ({by_priority(never)})")
    again = [job for job in jobs if runs[job["id"]] > 1]
    if again:
        problems.append(f"{len(again)} jobs ran more than once ({by_priority(again)})")
    unanswered = [job for job in jobs if job["result"] != 2 * job["n"]]
    if unanswered:
        errors = Counter(str(job["error"]) for job in unanswered).most_common(2)
        problems.append(
            f"the producer's .get() did not return the right result for {len(unanswered)} of "
            f"{JOBS} jobs ({by_priority(unanswered)}); {errors}"
        )
    with httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=15
    ) as http:
        problems += api_problems(http, jobs)
    assert not problems, "a plain Celery producer is not fully served:\n" + "\n".join(problems)

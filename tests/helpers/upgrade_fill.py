"""The upgrade test's hands inside a release: run with that release's python, in its tree.

``python -c "<this file's text>" publish '{"task": ..., "calls": [[args], ...], "options": {}}'``
publishes one job per call through the release's own publisher and prints the job ids as a JSON
list, then the file of the ``worker_app`` it used. ``records '<JSON list of ids>'`` prints each
job's status as the release's job store reads it, and the ids its listings show per status.
Only names both releases share are used (the e2e tasks, ``app.tasks``, ``store().get/page``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

STATUSES = ("pending", "scheduled", "active", "retrying", "succeeded", "failed", "cancelled")


def publish(spec: dict[str, Any]) -> None:
    import worker_app
    from tests import e2e_tasks  # type: ignore[attr-defined]  # noqa: F401 - the release's own layout
    from worker_app.celery import app

    task = app.tasks[spec["task"]]
    options = spec.get("options", {})
    ids = [task.apply_async(tuple(args), **options).id for args in spec["calls"]]
    print(json.dumps(ids))
    print(worker_app.__file__)


def records(ids: list[str]) -> None:
    from worker_app.jobs.records import store

    jobs = store()
    statuses = {}
    for job_id in ids:
        job = jobs.get(job_id)
        statuses[job_id] = job.status if job is not None else None
    listed = {
        status: [job.id for job in jobs.page(status=status, limit=10_000).jobs]
        for status in STATUSES
    }
    print(json.dumps({"statuses": statuses, "listed": listed}))


def main(argv: list[str]) -> None:
    command, argument = argv[1], json.loads(argv[2])
    if command == "publish":
        publish(argument)
    elif command == "records":
        records(argument)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)

"""Logs that carry the job's ids, and one trace from the API request to the worker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TRACED = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "worker-app-test"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@pytest.fixture
def traced_worker(tmp_path: Path) -> Any:
    worker = Worker(tmp_path / "worker.log", child_env(LOG_FORMAT="json", **TRACED)).start()
    yield worker
    worker.stop()


def test_lines_from_a_plain_logger_carry_their_own_task_and_trace_ids(
    traced_worker: Worker,
) -> None:
    keys = [f"chatty-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    ids = {key: e2e_tasks.chatty.delay(key, 25).id for key in keys}  # two slots: interleaved
    wait_until(
        lambda: (
            sum(
                '"chatty ' in line and "line 24" in line
                for line in traced_worker.log().splitlines()
            )
            == 2
        ),
        30,
        "both tasks to finish",
    )
    records = [
        r
        for r in json_lines(traced_worker.log_path)
        if str(r.get("message", "")).startswith("chatty")
    ]
    assert len(records) == 50
    traces = set()
    for record in records:
        key = record["message"].split()[1]
        assert record["task_id"] == ids[key]  # never the other task's
        assert record["task_name"] == "e2e.chatty" and record["queue"] == "default"
        assert record["attempt"] == 1
        assert len(record["trace_id"]) == 32
        traces.add((key, record["trace_id"]))
    assert len(traces) == 2 and len({t for _, t in traces}) == 2


def test_the_api_request_and_the_worker_run_share_one_trace(
    traced_worker: Worker, tmp_path: Path
) -> None:
    api = ApiServer(tmp_path / "api.log", child_env(API_TOKEN=API_TOKEN, **TRACED)).start()
    try:
        with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as http:
            job = http.post(
                "/api/jobs", json={"type": "alerts.send", "payload": {"user_id": 4, "message": "t"}}
            ).json()
            wait_until(
                lambda: http.get(f"/api/jobs/{job['id']}").json()["status"] == "succeeded",
                30,
                "the job",
            )
    finally:
        api.stop()

    def spans() -> list[dict[str, Any]]:
        found = json_lines(tmp_path / "api.log") + json_lines(traced_worker.log_path)
        return [s for s in found if "context" in s and "span_id" in s.get("context", {})]

    wait_until(lambda: any(s["name"].startswith("run/") for s in spans()), 15, "the worker span")
    everything = spans()
    by_id = {s["context"]["span_id"]: s for s in everything}
    request = next(
        s for s in everything if s["name"] == "POST /api/jobs" and s["kind"] == "SpanKind.SERVER"
    )
    run = next(s for s in everything if s["name"] == "run/alerts.send")
    assert run["context"]["trace_id"] == request["context"]["trace_id"]
    ancestors = []
    parent = run.get("parent_id")
    while parent in by_id:
        ancestors.append(by_id[parent]["name"])
        if parent == request["context"]["span_id"]:
            break
        parent = by_id[parent].get("parent_id")
    assert parent == request["context"]["span_id"], f"worker span's ancestors: {ancestors}"
    assert "apply_async/alerts.send" in ancestors  # the publish span sits between them

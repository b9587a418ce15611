"""Property-based run of schemathesis against the API's own OpenAPI schema: no 5xx, no
response that violates the schema. A private Redis and API of its own, since generated
requests enqueue, cancel, requeue and purge."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.env import BIN, child_env
from tests.helpers.processes import API_TOKEN, ApiServer
from worker_app.cli.devredis import RedisServer


def test_the_api_holds_to_its_schema(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    api = ApiServer(
        tmp_path / "api.log", child_env(REDIS_URL=server.url, API_TOKEN=API_TOKEN)
    ).start()
    try:
        done = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{api.url}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,"
                "content_type_conformance,response_schema_conformance",
                "--header",
                f"Authorization: Bearer {API_TOKEN}",
                "--max-examples",
                "25",
                "--seed",
                "7",
                "--request-timeout",
                "20",
                "--generation-database",
                "none",
            ],
            cwd=tmp_path,
            env=child_env(REDIS_URL=server.url),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        api.stop()
        server.stop()
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    assert "Traceback" not in (tmp_path / "api.log").read_text()

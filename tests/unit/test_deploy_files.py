"""The deployment files agree with the code: variables, modules, commands, ports, queues.

There is no Docker engine here, so these files are parsed and checked instead of run.
"""

from __future__ import annotations

import re
import shlex
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.env import ROOT
from worker_app.config import ConfigError, Settings, get_settings, load_settings, variable_of

FIELDS = {variable_of(name) for name in Settings.model_fields}


DEFAULT_QUEUES = {"critical", "default", "low"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return list(cmd) if isinstance(cmd, list) else shlex.split(cmd)


def env_example() -> dict[str, str | None]:
    """Variables of .env.example: value when set, None when only shown commented out."""
    found: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]+)=(.*)", line.strip())
        if match:
            found[match.group(2)] = None if match.group(1) else match.group(3)
    return found


def check_celery_command(argv: list[str]) -> None:
    assert argv[:3] == ["celery", "-A", "worker_app"], argv
    if "-Q" in argv:
        assert set(argv[argv.index("-Q") + 1].split(",")) <= DEFAULT_QUEUES
    if argv[3] == "flower":
        assert f"--port={Settings.model_fields['flower_port'].default}" in argv


def test_compose_services_match_the_code() -> None:
    data = compose()
    services = data["services"]
    ha = {name for name, service in services.items() if service.get("profiles") == ["sentinel"]}
    assert ha == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    for name in ha:
        assert "healthcheck" in services.pop(name), name
    assert set(services) == {"redis", "worker", "beat", "flower", "web", "relay"}
    redis = services["redis"]
    assert "--appendonly" in command_of(redis) and "yes" in command_of(redis)
    volume = redis["volumes"][0].split(":")[0]
    assert volume in data["volumes"]
    for name, service in services.items():
        assert "healthcheck" in service, name
        if name == "web":
            assert command_of(service)[:2] == ["uvicorn", "worker_app.api:app"]
            assert service["ports"] == ["8000:8000"] and "8000/health" in str(
                service["healthcheck"]
            )
        if name == "relay":
            assert command_of(service) == ["worker-app", "outbox", "relay"]
        elif name not in ("redis", "web"):
            check_celery_command(command_of(service))
        if name != "redis":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
            assert set(service.get("environment", {})) <= FIELDS
    assert services["flower"]["ports"] == [f"{Settings.model_fields['flower_port'].default}:5555"]


def test_the_sentinel_profile_watches_the_master_with_a_quorum() -> None:
    services = compose()["services"]
    replica = command_of(services["redis-replica"])
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    for n in (1, 2, 3):
        script = services[f"sentinel-{n}"]["command"][0]
        assert "sentinel monitor main redis 6379 2" in script
        assert "--sentinel" in script
    # The processes reach them through COMPOSE_REDIS_URL; plain Redis when it is unset.
    url = compose()["x-app"]["environment"]["REDIS_URL"]
    assert url == "${COMPOSE_REDIS_URL:-redis://redis:6379/0}"


def test_the_worker_outlives_its_shutdown_timeout_before_compose_kills_it() -> None:
    grace = compose()["services"]["worker"]["stop_grace_period"]
    default = Settings.model_fields["shutdown_timeout"].default
    # The rule the README states: grace >= ASYNQ_SHUTDOWN_TIMEOUT + 5 s.
    assert int(grace.rstrip("s")) >= default.total_seconds() + 5


def test_procfile_runs_the_same_commands_as_compose() -> None:
    processes = procfile()
    services = compose()["services"]
    assert set(processes) == {"web", "worker", "beat", "flower", "relay"}
    for name, line in processes.items():
        if name not in ("web", "relay"):
            check_celery_command(shlex.split(line))
        assert shlex.split(line) == command_of(services[name])


def test_the_worker_probes_are_worker_app_health() -> None:
    services = compose()["services"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "worker-app", "health"]
    assert services["beat"]["healthcheck"]["test"] == [
        "CMD",
        "worker-app",
        "health",
        "--scheduler",
    ]
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text()
    assert '["worker-app", "health"]' in (ROOT / "Dockerfile").read_text()


def test_every_module_named_in_a_command_exists() -> None:
    for path in ("Procfile", "docker-compose.yml", "Dockerfile", "Makefile", ".ci/run"):
        for module in re.findall(r"-A ([\w.]+)|-m ([\w.]+)", (ROOT / path).read_text()):
            name = next(part for part in module if part)
            if name.split(".")[0] not in ("worker_app", "bench", "tests"):
                continue  # the standard library's (python -m venv)
            assert (ROOT / Path(*name.split("."))).with_suffix(".py").exists() or (
                ROOT / Path(*name.split("."))
            ).is_dir(), f"{path} names {name}"


def test_worker_app_config_warns_of_a_worker_grace_shorter_than_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_app.cli.main import grace_warnings

    monkeypatch.setenv("ASYNQ_SHUTDOWN_TIMEOUT", "25s")  # the default (the suite's is shorter)
    get_settings.cache_clear()
    monkeypatch.setattr("worker_app.cli.main.get_settings", load_settings)
    assert grace_warnings(ROOT / "docker-compose.yml") == []
    short = tmp_path / "docker-compose.yml"
    compose_text = (ROOT / "docker-compose.yml").read_text()
    short.write_text(compose_text.replace("stop_grace_period: 30s", "stop_grace_period: 20s"))
    warnings = grace_warnings(short)
    assert len(warnings) == 1 and "'worker'" in warnings[0] and "20s" in warnings[0]
    assert grace_warnings(tmp_path / "missing.yml") == []


def test_env_example_lists_every_setting_and_its_values_are_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = env_example()
    assert set(listed) == FIELDS
    for name, value in listed.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings = load_settings()
    except ConfigError as exc:
        pytest.fail(f".env.example holds a bad value: {exc}")
    finally:
        get_settings.cache_clear()
    assert settings.shutdown_timeout == timedelta(seconds=25)


def test_dockerfile_installs_from_the_lock_file_and_runs_as_a_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-default-groups" in text  # no test or bench tools
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    cmd = re.search(r"^CMD (\[.*\])", text, re.M)
    assert cmd is not None
    check_celery_command(yaml.safe_load(cmd.group(1)))

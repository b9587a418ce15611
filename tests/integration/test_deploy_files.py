"""The deployment files agree with the code: variables, modules, commands, ports, queues.

There is no Docker engine here, so these files are parsed and checked instead of run.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml

from tests.helpers.env import ROOT
from worker_app.config import ConfigError, Settings, get_settings, load_settings, variable_of

FIELDS = {variable_of(name) for name in Settings.model_fields}


DEFAULT_QUEUES = {"critical", "default", "low"}


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

"""Commands run as a user runs them: as subprocesses of the suite's environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.env import BIN, ROOT, child_env

#: ASYNQ_HEALTH_CHECK_INTERVAL of the health tests, seconds.
HEALTH_INTERVAL = 1.0


def run(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the repository root; its output as text."""
    return subprocess.run(
        list(argv),
        cwd=ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def health(*args: str) -> subprocess.CompletedProcess[str]:
    """``worker-app health ARGS`` with a heartbeat interval of :data:`HEALTH_INTERVAL`."""
    env = child_env(ASYNQ_HEALTH_CHECK_INTERVAL=f"{HEALTH_INTERVAL}s")
    return run(str(BIN / "worker-app"), "health", *args, env=env, timeout=30)


def start_dev(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``worker-app dev ARGS`` in ``folder``, in a session of its own (a Ctrl-C reaches the
    whole group), writing to ``folder/dev.log``."""
    with open(folder / "dev.log", "wb") as log:
        return subprocess.Popen(
            [str(BIN / "worker-app"), "dev", *args],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

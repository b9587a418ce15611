"""A real worker in a process group of its own, for the fault tests that freeze or kill it.

SIGSTOP and SIGKILL go to the whole group, the main process and its pool processes at once, as
when a container is frozen or OOM-killed. The same class runs another checkout of the project
(an older release in a virtualenv of its own) with ``root`` and ``bin_dir``.
"""

from __future__ import annotations

import contextlib
import os
import signal

from tests.helpers.processes import Worker


class GroupWorker(Worker):
    """``celery -A worker_app worker`` started in a new session: its pid is its group id."""

    new_session = True

    #: Frozen by SIGSTOP, not yet resumed.
    frozen = False

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def freeze(self) -> None:
        """SIGSTOP the worker and its pool processes."""
        self._signal_group(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes, and reap the main process."""
        self._signal_group(signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """A graceful stop (thawed first when frozen); the group is killed if that fails."""
        assert self.process is not None
        if self.process.poll() is None and self.frozen:
            self.thaw()
        try:
            return super().stop(timeout)
        finally:
            self._signal_group(signal.SIGKILL)  # pool processes a failed stop left behind

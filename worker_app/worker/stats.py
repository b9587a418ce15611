"""What this worker has done since it started, counted in its main process.

The main process learns every outcome that is not a success (the Request's failure and timeout
callbacks, the consumer's refusals) and Celery counts every accepted job, so successes are what
remains. No Redis round trip and no locking: Celery's event loop is single-threaded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Outcomes other than success since the worker started."""

    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    #: Back on the queue (its process was lost): it ends later, maybe on another worker.
    requeued: int = 0
    #: Failed jobs plus messages refused before they could start (undecodable, unknown task).
    dead_lettered: int = 0

    def snapshot(self, accepted: int, active: int) -> dict[str, int]:
        """The counts to report, given the jobs Celery accepted and those running now."""
        finished = accepted - active - self.requeued
        return {
            "processed": finished,
            "succeeded": finished - self.failed - self.retried - self.cancelled,
            "failed": self.failed,
            "retried": self.retried,
            "cancelled": self.cancelled,
            "dead_lettered": self.dead_lettered,
            "active": active,
        }


COUNTERS = Counters()

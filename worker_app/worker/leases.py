"""Whether this worker's leases held without a gap, for its requests to check before they start.

A message this worker holds but has not started stays its own only while the worker renews its
lease. After a gap in the renewals longer than the lease bears (the host was cut off from Redis,
or Redis did not answer), another worker's sweep may have put the message back and run it: a
request held across such a gap is given back instead of started (the give-back is a no-op when
the message is no longer this worker's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: Share of ``ASYNQ_VISIBILITY_TIMEOUT`` after which a lease not renewed is taken as lost.
STALE_SHARE = 0.8


@dataclass
class Leases:
    """The renewals of this process's leases (monotonic seconds)."""

    timeout: float = 60.0
    #: When a renewal round last succeeded (0: none yet).
    renewed_at: float = 0.0
    #: When a round succeeded after a gap the leases may not have survived.
    gap_at: float = 0.0

    def renewed(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.renewed_at and now - self.renewed_at > self.timeout * STALE_SHARE:
            self.gap_at = now
        self.renewed_at = now

    def may_start(self, received_at: float, now: float | None = None) -> bool:
        """Whether a message received at ``received_at`` is still surely this worker's."""
        now = time.monotonic() if now is None else now
        if received_at < self.gap_at:
            return False
        return now - max(self.renewed_at, received_at) <= self.timeout * STALE_SHARE


LEASES = Leases()

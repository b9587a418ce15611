"""Whether this worker's leases held without a gap, for a job to check before it starts.

A message this worker holds but has not started stays its own only while the worker renews its
lease. After a gap in the renewals longer than the lease bears (the host was cut off from Redis,
or Redis did not answer, or the worker's main process was stalled), another worker's sweep may
have put the message back and run it: a job held across such a gap is given back instead of
started (the give-back is a no-op when the message is no longer this worker's).

Two places check: the main process before it hands a request to the pool, and the pool process
before the job's body runs, since a request handed over before a gap can reach a pool process
only after it (the pool was busy, the main loop was blocked). The renewals are therefore kept in
memory shared with the pool processes (an anonymous shared mapping, inherited by each fork), on
``time.monotonic()``, one clock for every process of the host.
"""

from __future__ import annotations

import mmap
import struct
import time

#: Share of ``ASYNQ_VISIBILITY_TIMEOUT`` after which a lease not renewed is taken as lost.
STALE_SHARE = 0.8

#: The request field a pool process reads the message's receipt time from.
RECEIVED_FIELD = "worker_app_received_at"
#: The ``delivery_info`` field the fetch stamps a message with: when (monotonic) the worker sent
#: the call that held it. Its lease began no earlier, however late the reply came (a reply held
#: up by a cut-off arrives after the lease it started may have lapsed).
ASKED_FIELD = "worker_app_asked_at"

_SLOT = struct.Struct("d")
_TIMEOUT, _RENEWED_AT, _GAP_AT = (n * _SLOT.size for n in range(3))


class Leases:
    """The renewals of this worker's leases (monotonic seconds), shared with its pool processes."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._memory = mmap.mmap(-1, 3 * _SLOT.size)  # MAP_SHARED: forks see the writes
        self.timeout = timeout

    def _get(self, offset: int) -> float:
        value: float = _SLOT.unpack_from(self._memory, offset)[0]
        return value

    def _set(self, offset: int, value: float) -> None:
        _SLOT.pack_into(self._memory, offset, value)

    @property
    def timeout(self) -> float:
        return self._get(_TIMEOUT)

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._set(_TIMEOUT, value)

    @property
    def renewed_at(self) -> float:
        """When a renewal round last succeeded, or the renewals began (0: not yet)."""
        return self._get(_RENEWED_AT)

    @property
    def gap_at(self) -> float:
        """When a round succeeded after a gap the leases may not have survived (0: none)."""
        return self._get(_GAP_AT)

    def begin(self, now: float | None = None) -> None:
        """The renewals start (the worker holds nothing yet): a gap counts from now."""
        self._set(_RENEWED_AT, time.monotonic() if now is None else now)

    def renewed(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        renewed_at = self.renewed_at
        if renewed_at and now - renewed_at > self.timeout * STALE_SHARE:
            self._set(_GAP_AT, now)  # before the renewal: a reader never sees it without
        self._set(_RENEWED_AT, now)

    def may_start(self, received_at: float, now: float | None = None) -> bool:
        """Whether a message received at ``received_at`` is still surely this worker's."""
        now = time.monotonic() if now is None else now
        renewed_at = self.renewed_at  # first: a gap is stored before the renewal that ends it
        if received_at < self.gap_at:
            return False
        return now - max(renewed_at, received_at) <= self.timeout * STALE_SHARE


LEASES = Leases()

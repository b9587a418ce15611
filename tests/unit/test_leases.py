"""A worker starts a held message only while its leases have held without a gap."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import redis

from worker_app.broker.leases import LEASES, Leases


def test_a_message_starts_while_the_leases_are_renewed() -> None:
    leases = Leases(timeout=4.0)
    leases.renewed(now=100.0)
    assert leases.may_start(received_at=99.0, now=101.0)
    leases.renewed(now=101.3)
    assert leases.may_start(received_at=99.0, now=104.0)


def test_a_message_received_before_a_gap_in_the_renewals_does_not_start() -> None:
    leases = Leases(timeout=4.0)
    leases.renewed(now=100.0)
    # Cut off: no renewal for 6 s, then one succeeds again.
    leases.renewed(now=106.0)
    assert not leases.may_start(received_at=99.5, now=106.1)
    assert leases.may_start(received_at=106.05, now=106.1)  # fetched after the gap


def test_a_message_waiting_while_renewals_fail_does_not_start() -> None:
    leases = Leases(timeout=4.0)
    leases.renewed(now=100.0)
    assert not leases.may_start(received_at=100.5, now=104.0)  # 3.5 s without a renewal
    assert Leases(timeout=4.0).may_start(received_at=10.0, now=10.5)  # none yet: since receipt


def test_a_pool_process_sees_the_renewals_of_the_process_it_was_forked_from() -> None:
    leases = Leases(timeout=4.0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the pool process: waits for the parent's renewal after a gap, then reads it
        os.close(write)
        os.read(read, 1)
        # Received just before the renewal that ended the gap: refused only if the gap is seen.
        seen = leases.renewed_at == 106.0 and not leases.may_start(received_at=105.9, now=106.1)
        os._exit(0 if seen else 1)
    os.close(read)
    leases.renewed(now=100.0)
    leases.renewed(now=106.0)  # after the fork: the child sees it
    os.write(write, b"x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_gap_before_the_first_renewal_counts_from_the_start_of_the_renewals() -> None:
    leases = Leases(timeout=4.0)
    leases.begin(now=100.0)
    leases.renewed(now=106.0)  # the first round, 6 s after the start
    assert not leases.may_start(received_at=100.5, now=106.1)


def test_a_renewal_round_with_nothing_to_renew_counts_only_when_redis_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request handed to the pool before a cut-off may have left the renewed list (its
    connection was lost): the rounds that follow must still see Redis away, or that request
    would start after the gap."""
    from worker_app.worker import steps

    class Away:
        def ping(self) -> None:
            raise redis.ConnectionError("cut off")

    renewer = steps.LeaseRenewer(SimpleNamespace())
    renewer.worker = SimpleNamespace(consumer=None)
    monkeypatch.setattr(steps, "CARRIED", {})
    monkeypatch.setattr(steps, "get_redis", lambda: Away())
    before = LEASES.renewed_at
    with pytest.raises(redis.ConnectionError):
        renewer.tick()
    assert LEASES.renewed_at == before

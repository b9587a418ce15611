"""A worker starts a held message only while its leases have held without a gap."""

from __future__ import annotations

from worker_app.worker.leases import Leases


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

"""Rate limits are parsed strictly."""

from __future__ import annotations

from worker_app.flow.ratelimit import parse_rate


def test_rates_are_parsed_strictly() -> None:
    assert parse_rate("20/s") == 0.05
    assert parse_rate("100/m") == 0.6
    for bad in ("20", "0/s", "x/s", "20/d"):
        try:
            parse_rate(bad)
        except ValueError:
            continue
        raise AssertionError(bad)

"""Go-style durations (``300ms``, ``1h30m``, ``2d``) and bare seconds, as used by ``ASYNQ_*``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_BARE = re.compile(r"\d+(?:\.\d+)?")

DURATION_FORM = "a duration such as 300ms, 30s, 5m, 1h30m or 2d, or a number of seconds"


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` into a timedelta.

    Raises:
        ValueError: ``text`` is not a Go-style duration or a bare number of seconds.
    """
    value = text.strip()
    if _BARE.fullmatch(value):
        return timedelta(seconds=float(value))
    pos = 0
    seconds = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(value):
        raise ValueError(f"not {DURATION_FORM}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the shortest Go-style form (``1h30m``, ``250ms``)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"

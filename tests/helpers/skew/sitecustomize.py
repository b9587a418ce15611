"""A host whose clock is off: loaded first by a Python process whose ``PYTHONPATH`` starts with
this directory, it shifts ``time.time()`` by ``CLOCK_OFFSET`` seconds for the whole process (and
the pool processes it forks)."""

from __future__ import annotations

import os
import time

_OFFSET = float(os.environ.get("CLOCK_OFFSET") or 0)

if _OFFSET:
    _real = time.time

    def _skewed() -> float:
        return _real() + _OFFSET

    time.time = _skewed

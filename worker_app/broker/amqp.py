"""Celery's task message builder, with a cheaper text of the arguments.

Celery renders the arguments a message shows in logs and Flower (``argsrepr``, ``kwargsrepr``)
with its safe repr, which walks the value in Python and costs more than building the rest of
the message. Messages are JSON here, so arguments are plain data whose built-in ``repr`` is safe
and runs in C: the same text, capped at the same length. Everything else is Celery's builder.
"""

from __future__ import annotations

import os
from typing import Any

from celery.app.amqp import AMQP as CeleryAMQP
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr

#: Longest argument text a message carries for logs and Flower (Celery's limit).
REPR_MAX = 1024


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to :data:`REPR_MAX` characters (Celery's safe repr if it fails)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an object with a broken __repr__: Celery's way
        return saferepr(value, REPR_MAX)
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."


def origin() -> str:
    """What Celery writes as a message's ``origin`` (``gen<pid>@<host>``), built once per
    process instead of once per message."""
    pid = os.getpid()
    if _origin[0] != pid:
        _origin[:] = [pid, anon_nodename()]
    return str(_origin[1])


_origin: list[Any] = [0, ""]


class AMQP(CeleryAMQP):
    """The app's message layer (``Celery(amqp=...)``): Celery's, with :func:`short_repr`."""

    def as_task_v2(self, *positional: Any, **options: Any) -> Any:
        # Called as Celery calls it: (task_id, name, args, kwargs, ...) by position.
        args = positional[2] if len(positional) > 2 else options.get("args")
        kwargs = positional[3] if len(positional) > 3 else options.get("kwargs")
        if options.get("argsrepr") is None:
            options["argsrepr"] = short_repr(args or ())
        if options.get("kwargsrepr") is None:
            options["kwargsrepr"] = short_repr(kwargs or {})
        if not options.get("origin"):
            options["origin"] = origin()
        return super().as_task_v2(*positional, **options)

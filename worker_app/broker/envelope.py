"""What a message envelope is: the rule the fetch script applies, said once more for Python.

kombu's Redis transport stores a message as a JSON object whose ``properties`` hold a
``delivery_info`` object and a string ``delivery_tag``. The fetch script (``fetch.lua``) holds
an item as a message only when it decodes as such an object with a non-empty string tag;
anything else is held under a raw tag until it is dead-lettered. Python applies the same rule
to what the script held, and reads strings as the script does, byte for byte: bytes that are
not UTF-8 are kept (as surrogate escapes), never a reason to refuse what the script accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import Any

from worker_app import keys

#: kombu's separator between a queue's name and its priority step in a list's name.
SEP = "\x06\x16"
#: The priority steps of a queue's lists (kombu's default: a plain Celery producer uses them).
#: A priority is rounded down to its step; within a queue, a lower step is taken first.
PRIORITY_STEPS = (0, 3, 6, 9)


class MalformedEnvelope(ValueError):
    """The item is not a kombu message envelope."""


def parse(item: bytes | str) -> dict[str, Any]:
    """The envelope ``item`` holds.

    Raises:
        ValueError: not JSON (``JSONDecodeError``), or :class:`MalformedEnvelope`: not shaped
            as a kombu envelope.
    """
    text = item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else item
    payload: Any = json.loads(text)
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info"), dict):
        raise MalformedEnvelope("not a kombu message envelope (no properties.delivery_info)")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise MalformedEnvelope("not a kombu message envelope (no string properties.delivery_tag)")
    envelope: dict[str, Any] = payload
    return envelope


def step(priority: Any) -> int:
    """The priority step of a message priority (kombu's rounding: down to a step, within 0-9)."""
    try:
        value = max(0, min(int(priority), PRIORITY_STEPS[-1]))
    except (TypeError, ValueError):
        return 0
    return max(s for s in PRIORITY_STEPS if s <= value)


def list_key(queue: str, priority: Any = 0) -> str:
    """The list that holds ``queue``'s messages of ``priority`` (as kombu names it)."""
    level = step(priority)
    return f"{queue}{SEP}{level}" if level else queue


def lists_of(queue: str) -> list[str]:
    """Every list of ``queue``, in the order they are taken from."""
    return [list_key(queue, level) for level in PRIORITY_STEPS]


def queue_of(list_name: str) -> str:
    """The queue a list belongs to."""
    return list_name.split(SEP, 1)[0]


def priority_of(envelope: dict[str, Any]) -> Any:
    """The priority a message was sent with (0 when none)."""
    properties = envelope.get("properties")
    return (properties.get("priority") if isinstance(properties, dict) else None) or 0


def mark_redelivered(envelope: dict[str, Any]) -> None:
    """Flag a message that goes back on its queue, as kombu does."""
    headers = envelope.get("headers")
    if isinstance(headers, dict):
        headers["redelivered"] = True
    properties = envelope.get("properties")
    info = properties.get("delivery_info") if isinstance(properties, dict) else None
    if isinstance(info, dict):
        info["redelivered"] = True


def job_id(envelope: dict[str, Any]) -> str:
    """The task id of a Celery message ('' for anything else)."""
    headers = envelope.get("headers")
    value = headers.get("id") if isinstance(headers, dict) else None
    return value if isinstance(value, str) else ""


_TAG = re.compile(rb'"delivery_tag": ?"([^"]+)"')


def held_tag(item: bytes, verdict: str) -> str:
    """The tag the fetch script held ``item`` under ('' when it did not hold it): a bad item's
    is derived from its bytes, a message's is its envelope's (read from the text, for an
    envelope Python could not parse)."""
    if verdict == "bad":
        return keys.RAW_TAG + hashlib.sha1(item).hexdigest()
    if verdict != "held":
        return ""
    found = _TAG.search(item)
    return found.group(1).decode("utf-8", "surrogateescape") if found else ""


def wrap(
    data: str, headers: dict[str, Any], properties: dict[str, Any], queue: str, priority: Any
) -> dict[str, Any]:
    """The envelope kombu's producer and Redis channel put on ``queue`` for a JSON body
    ``data``: the body in base64, the delivery info, a new delivery tag. ``properties`` is
    changed in place."""
    properties.setdefault("delivery_info", {})
    properties.setdefault("priority", priority or 0)
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = str(uuid.uuid4())
    properties["delivery_info"].update(exchange="", routing_key=queue)
    return {
        "body": base64.b64encode(data.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }

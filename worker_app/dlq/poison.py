"""Dead-letter entries for messages a worker cannot even start: undecodable bytes, foreign
JSON, pickle, unknown task names. Built from what arrived, raw bytes kept as base64."""

from __future__ import annotations

import base64
import hashlib
import logging
import traceback
from typing import Any

from worker_app.dlq.entries import Entry

__all__ = ["message_entry", "raw_entry"]

logger = logging.getLogger(__name__)


def _raw_id(raw: bytes) -> str:
    # Identical bytes are the same failure: writing them twice leaves one entry.
    return "raw-" + hashlib.sha1(raw).hexdigest()[:20]


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return str(body).encode("utf-8", "replace")


def raw_entry(
    raw: bytes,
    queue: str,
    exc: BaseException,
    *,
    reason: str = "undecodable",
    headers: dict[str, Any] | None = None,
    content_type: str | None = None,
) -> Entry:
    """An entry for bytes that could not be turned into a task."""
    headers = headers or {}
    task_id = str(headers.get("id") or _raw_id(raw))
    return Entry(
        task_id=task_id,
        task_name=str(headers.get("task") or ""),
        reason=reason,
        queue=queue,
        headers={k: v for k, v in headers.items() if isinstance(k, str)},
        exc_type=type(exc).__name__,
        exc_message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        raw=base64.b64encode(raw).decode("ascii"),
        content_type=content_type,
    )


def message_entry(message: Any, exc: BaseException, reason: str) -> Entry:
    """An entry for a kombu message the consumer refused."""
    delivery = getattr(message, "delivery_info", None) or {}
    queue = str(delivery.get("routing_key") or "")
    headers = dict(getattr(message, "headers", None) or {})
    raw = _as_bytes(getattr(message, "body", b""))
    entry = raw_entry(
        raw,
        queue,
        exc,
        reason=reason,
        headers=headers,
        content_type=getattr(message, "content_type", None),
    )
    if reason == "unknown_task":
        try:
            args, kwargs, _embed = message.decode()
            entry.args, entry.kwargs, entry.raw = list(args), dict(kwargs), None
        except Exception:  # noqa: BLE001 - the raw bytes are kept instead
            logger.debug("body of unknown task %s kept raw", entry.task_id)
    return entry

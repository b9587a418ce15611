"""The console's forms: log in and out, and requeue, delete or purge dead letters.

Every form that changes something is a POST with this session's CSRF token, and answers with a
redirect (303) to the page that shows the outcome, so reloading that page repeats nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from worker_app.api.console.auth import (
    COOKIE,
    Viewer,
    auth_configured,
    check_csrf,
    form,
    issue,
    session_nonce,
    token_matches,
    viewer,
)
from worker_app.api.console.render import (
    ConsoleError,
    base_path,
    link,
    render,
    set_session,
)
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import DIMENSIONS

logger = logging.getLogger(__name__)
router = APIRouter()
Who = Depends(viewer)
Form = Depends(form)


def _actor(who: Viewer) -> str:
    """How the audit history names who acted."""
    return f"console:{who.via}"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _next(request: Request, given: str | None) -> str:
    """Where to go after logging in: a console path, never another site."""
    home = f"{base_path(request)}/"
    if not given or not given.startswith(home) or "//" in given or "\\" in given:
        return home
    return given


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    """The login form; straight on when already logged in or when the console is open."""
    target = _next(request, request.query_params.get("next"))
    if not auth_configured() or session_nonce(request.cookies.get(COOKIE)):
        return _see(target)
    return render(request, "login.html", None, target=target, error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, fields: dict[str, str] = Form) -> Response:
    """Check the API token and start a session (a signed, HttpOnly, SameSite=Strict cookie)."""
    target = _next(request, fields.get("next"))
    if not auth_configured():
        return _see(target)
    if not token_matches(fields.get("token", "")):
        logger.warning("console login refused: wrong token (from %s)", _client(request))
        return render(
            request,
            "login.html",
            None,
            status=401,
            target=target,
            error="That is not the API token.",
        )
    cookie, _ = issue()
    logger.info("console login (from %s)", _client(request))
    response = _see(target)
    set_session(request, response, cookie)
    return response


@router.post("/logout")
def logout(request: Request, who: Viewer = Who, fields: dict[str, str] = Form) -> Response:
    """End this browser's session."""
    check_csrf(who, fields)
    response = _see(link(request, "/login", done="logged_out"))
    response.delete_cookie(COOKIE, path=base_path(request) or "/")
    return response


def _requeue_one(task_id: str, who: Viewer) -> None:
    try:
        found = manage.requeue(task_id, actor=_actor(who))
    except manage.RequeueRefused as exc:
        raise ConsoleError(409, str(exc)) from None
    if not found:
        raise ConsoleError(404, f"No dead-letter entry {task_id!r}: it was already handled.")


@router.post("/dlq/{task_id}/requeue")
def requeue_entry(
    request: Request, task_id: str, who: Viewer = Who, fields: dict[str, str] = Form
) -> Response:
    """Put one dead letter back on its queue (same id, attempts reset); show its job."""
    check_csrf(who, fields)
    _requeue_one(task_id, who)
    return _see(link(request, f"/jobs/{task_id}", done="requeued", n=1))


@router.post("/dlq/{task_id}/delete")
def delete_entry(
    request: Request, task_id: str, who: Viewer = Who, fields: dict[str, str] = Form
) -> Response:
    """Remove one dead letter for good."""
    check_csrf(who, fields)
    if not manage.delete(task_id, actor=_actor(who)):
        raise ConsoleError(404, f"No dead-letter entry {task_id!r}: it was already handled.")
    return _see(link(request, "/dlq", done="deleted", n=1))


def _bulk_filter(fields: dict[str, str]) -> tuple[entries.Filter, dict[str, Any]]:
    """The filter a bulk form names, and it as query parameters for the page after.

    Raises:
        ConsoleError: an unknown reason, or neither a filter nor ``all`` (409).
    """
    given = {k: fields.get(k, "").strip() or None for k in DIMENSIONS}
    if given["reason"] is not None and given["reason"] not in entries.REASONS:
        raise ConsoleError(422, f"reason must be one of {', '.join(entries.REASONS)}")
    flt = entries.Filter(
        task=given["task"],
        reason=given["reason"],
        queue=given["queue"],
        fingerprint=given["fingerprint"],
    )
    if not flt.given() and fields.get("all") != "1":
        raise ConsoleError(409, "Choose a filter first, or confirm that every entry is meant.")
    return flt, {k: v for k, v in given.items() if v}


@router.post("/dlq/requeue")
def requeue_filtered(
    request: Request, who: Viewer = Who, fields: dict[str, str] = Form
) -> Response:
    """Requeue every dead letter the filter matches."""
    check_csrf(who, fields)
    flt, params = _bulk_filter(fields)
    result = manage.requeue_many(flt, actor=_actor(who))
    if result.stopped is not None:
        raise ConsoleError(
            409,
            f"Requeued {result.done} of {result.total}, then stopped: {result.stopped}. "
            "The rest are still in the dead-letter queue.",
        )
    return _see(
        link(request, "/dlq", **params, done="requeued", n=result.done, refused=result.refused)
    )


@router.post("/dlq/purge")
def purge_filtered(request: Request, who: Viewer = Who, fields: dict[str, str] = Form) -> Response:
    """Delete every dead letter the filter matches (or all of them)."""
    check_csrf(who, fields)
    flt, params = _bulk_filter(fields)
    removed = manage.purge(flt, actor=_actor(who))
    return _see(link(request, "/dlq", **params, done="purged", n=removed))

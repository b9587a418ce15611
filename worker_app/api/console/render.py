"""Templates, the filters they use, and the response headers every console page carries.

Autoescaping is on for every template: task arguments, error messages and tracebacks are
whatever a producer or a failing task put there, and are shown as text, never as markup.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from worker_app.api.console.auth import COOKIE, SESSION_SECONDS, LoginRequired, Viewer, viewer
from worker_app.config import get_settings

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# The pages need nothing from elsewhere: scripts, styles and forms stay on this origin, and no
# inline script may run even if a value ever escaped its escaping.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

#: Messages shown after an action redirected back, by the ``done`` code in the URL: the URL
#: names an outcome, the text comes from here, so a link cannot put words on the page.
NOTICES = {
    "requeued": ("Requeued {n} job.", "Requeued {n} jobs."),
    "deleted": ("Deleted {n} dead-letter entry.", "Deleted {n} dead-letter entries."),
    "purged": ("Purged {n} dead-letter entry.", "Purged {n} dead-letter entries."),
    "refused": (
        "{n} entry could not be requeued (undecodable message); see the log.",
        "{n} entries could not be requeued (undecodable messages); see the log.",
    ),
    "logged_out": ("Logged out.", "Logged out."),
}


class ConsoleError(Exception):
    """A request the console answers with an error page of ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _when(value: float | None) -> str:
    if not value:
        return "–"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``1h 2m``, ``3m 4s``, ``5.2s``, ``80ms``: a span as people read it."""
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def _ago(value: float | None) -> str:
    return f"{duration(time.time() - value)} ago" if value else "–"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=True)


def _build_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, ago=_ago, duration=duration, pretty=_pretty)
    return env


ENV = _build_env()


def base_path(request: Request) -> str:
    """Where the console is mounted (``/ui``, behind any proxy prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def flower_url(request: Request) -> str:
    """Flower as operators reach it: ``FLOWER_URL``, else this host on ``FLOWER_PORT``."""
    settings = get_settings()
    if settings.flower_url:
        return settings.flower_url.rstrip("/")
    host = request.url.hostname or "localhost"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.flower_port}"


def link(request: Request, path: str, **params: Any) -> str:
    """A console URL with the non-empty ``params`` as its query string."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{base_path(request)}{path}{'?' + query if query else ''}"


def notice(request: Request) -> str | None:
    forms = NOTICES.get(request.query_params.get("done", ""))
    if forms is None:
        return None
    count = request.query_params.get("n", "")
    n = int(count) if count.isdigit() and len(count) < 10 else 0
    text = forms[0 if n == 1 else 1].format(n=n)
    refused = request.query_params.get("refused", "")
    if refused.isdigit() and len(refused) < 10 and int(refused):
        r = int(refused)
        text += " " + NOTICES["refused"][0 if r == 1 else 1].format(n=r)
    return text


def render(
    request: Request,
    name: str,
    who: Viewer | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render template ``name`` as a page (or fragment) with the headers and cookie it needs."""
    html = ENV.get_template(name).render(
        request=request,
        viewer=who,
        base=base_path(request),
        flower=flower_url(request),
        notice=notice(request),
        link=lambda path, **params: link(request, path, **params),
        **context,
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if who is not None and who.new_cookie is not None:
        set_session(request, response, who.new_cookie)
    return response


def set_session(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=base_path(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A page that says what went wrong, never a traceback; with the menu for a known viewer."""
    try:
        who: Viewer | None = viewer(request)
    except LoginRequired:
        who = None
    return render(request, "error.html", who, status=status, status_code=status, message=message)

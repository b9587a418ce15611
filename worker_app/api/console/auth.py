"""Who may use the console: the API's bearer token, or a session cookie from the login form.

A session is stateless, ``<expires>.<nonce>.<signature>``, signed with HMAC-SHA256 under a key
derived from ``API_TOKEN``: every API replica accepts it without shared state, and changing the
token ends every session. Forms that change something carry a CSRF token derived from the
session's nonce; the cookie is HttpOnly and SameSite=Strict, so another site can neither send it
along nor read the token. Without ``API_TOKEN`` (development) the console is open, like the API,
and the session cookie is issued on the first visit only to carry the CSRF nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import Request

from worker_app.config import get_settings

COOKIE = "worker_app_console"
#: Seconds a login lasts; an operator logs in again the next working day.
SESSION_SECONDS = 12 * 3600
#: Largest form body read, in bytes: the console's forms hold a few short fields.
FORM_MAX = 16 * 1024


class LoginRequired(Exception):
    """No valid bearer token or session: browsers go to the login form, others get 401."""

    def __init__(self, message: str, *, browser: bool = True) -> None:
        super().__init__(message)
        #: False when a program sent a wrong bearer token: it gets 401, never a login form.
        self.browser = browser


class CsrfRejected(Exception):
    """A form that changes something came without the token of this session."""


class BadForm(Exception):
    """A POST body that is not a small URL-encoded form."""


@dataclass(frozen=True)
class Viewer:
    """The authenticated caller of one request."""

    via: Literal["bearer", "session", "open"]
    #: The session's nonce, which the CSRF token is derived from ("" for bearer callers).
    nonce: str = ""
    #: A cookie to set with the response: the open console's first visit.
    new_cookie: str | None = None

    @property
    def csrf(self) -> str:
        """The token the forms of this session carry."""
        if not self.nonce:
            return ""
        return _sign(f"csrf|{self.nonce}")

    @property
    def can_log_out(self) -> bool:
        return self.via == "session"


def _token() -> str | None:
    token = get_settings().api_token
    return token.get_secret_value() if token is not None else None


@lru_cache(maxsize=4)
def _key(token: str | None) -> bytes:
    """The signing key: derived from the token, or random for this process when there is none."""
    if token is None:
        return secrets.token_bytes(32)
    return hmac.new(token.encode(), b"worker_app console session", hashlib.sha256).digest()


def _sign(message: str) -> str:
    return hmac.new(_key(_token()), message.encode(), hashlib.sha256).hexdigest()


def issue(now: float | None = None) -> tuple[str, str]:
    """A new session cookie value and its nonce."""
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    nonce = secrets.token_urlsafe(18)
    return f"{expires}.{nonce}.{_sign(f'session|{expires}|{nonce}')}", nonce


def session_nonce(cookie: str | None, now: float | None = None) -> str | None:
    """The nonce of a valid, unexpired session cookie, else None."""
    expires, _, rest = (cookie or "").partition(".")
    nonce, _, signature = rest.partition(".")
    if not expires.isdigit() or not nonce or not signature:
        return None
    expected = _sign(f"session|{expires}|{nonce}")
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    return nonce


def token_matches(given: str) -> bool:
    """Whether ``given`` is the API token (constant time); True when none is configured."""
    token = _token()
    return token is None or hmac.compare_digest(given.encode(), token.encode())


def auth_configured() -> bool:
    return _token() is not None


def viewer(request: Request) -> Viewer:
    """Dependency of every console page and action: who is asking.

    Raises:
        LoginRequired: no valid bearer token or session cookie while a token is configured.
    """
    nonce = session_nonce(request.cookies.get(COOKIE))
    if not auth_configured():
        if nonce:
            return Viewer("open", nonce)
        cookie, nonce = issue()
        return Viewer("open", nonce, new_cookie=cookie)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        if token_matches(given.strip()):
            return Viewer("bearer")
        raise LoginRequired("wrong bearer token", browser=False)
    if nonce:
        return Viewer("session", nonce)
    raise LoginRequired("log in first")


async def form(request: Request) -> dict[str, str]:
    """Dependency: the fields of a URL-encoded form body (first value of each name).

    Raises:
        BadForm: another content type, a body over :data:`FORM_MAX`, or one that is not UTF-8.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise BadForm(f"expected a form (application/x-www-form-urlencoded), got {kind!r}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX:
            raise BadForm(f"the form is larger than {FORM_MAX} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(f"the form could not be read: {exc}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def check_csrf(who: Viewer, fields: dict[str, str]) -> None:
    """Refuse a state-changing form without this session's token.

    Bearer callers are exempt: a browser never adds an ``Authorization`` header across sites.

    Raises:
        CsrfRejected: the token is missing or belongs to another session.
    """
    if who.via == "bearer":
        return
    if who.new_cookie is not None or not hmac.compare_digest(
        fields.get("csrf", "").encode(), who.csrf.encode()
    ):
        raise CsrfRejected("the form's security token is missing or out of date")

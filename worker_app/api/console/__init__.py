"""The operator console at ``/ui``: queues, jobs and the dead-letter queue in a browser.

Served by the API process as a sub-application, so its errors are pages rather than the API's
JSON bodies and its routes stay out of the API's OpenAPI schema. Server-rendered (Jinja2,
autoescaped), with one small local script for confirmations and live refresh.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker_app.api.console import actions, pages
from worker_app.api.console.auth import BadForm, CsrfRejected, LoginRequired
from worker_app.api.console.render import STATIC, ConsoleError, base_path, error_page
from worker_app.errors import BrokerUnavailable, WorkerAppError

logger = logging.getLogger(__name__)

__all__ = ["create_console"]


def create_console() -> FastAPI:
    """The console application, to be mounted at ``/ui``."""
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.mount("/static", StaticFiles(directory=STATIC), name="static")
    console.include_router(actions.router)
    console.include_router(pages.router)
    _add_error_pages(console)
    return console


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _add_error_pages(console: FastAPI) -> None:
    @console.exception_handler(LoginRequired)
    def _login(request: Request, exc: LoginRequired) -> Response:
        if exc.browser and _wants_html(request) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = f"{base_path(request)}/login?{urlencode({'next': target})}"
            return RedirectResponse(login, status_code=303)
        login = f"{base_path(request)}/login"
        return JSONResponse(
            {"error": f"missing or wrong bearer token, or no console session; log in at {login}"},
            status_code=401,
        )

    @console.exception_handler(CsrfRejected)
    def _csrf(request: Request, exc: CsrfRejected) -> Response:
        return error_page(request, 403, f"{exc}: reload the page and try again.")

    @console.exception_handler(BadForm)
    def _bad_form(request: Request, exc: BadForm) -> Response:
        return error_page(request, 422, str(exc))

    @console.exception_handler(ConsoleError)
    def _console(request: Request, exc: ConsoleError) -> Response:
        return error_page(request, exc.status, str(exc))

    @console.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_page(request, 422, f"Invalid request: {problems}")

    @console.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "No such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message)

    @console.exception_handler(redis.RedisError)
    @console.exception_handler(OperationalError)
    @console.exception_handler(BrokerUnavailable)
    @console.exception_handler(ConnectionError)
    def _redis_down(request: Request, exc: Exception) -> Response:
        logger.warning("console answering 503: Redis is unreachable (%s)", exc)
        return error_page(request, 503, "Redis is unreachable; try again shortly.")

    @console.exception_handler(WorkerAppError)
    def _refused(request: Request, exc: WorkerAppError) -> Response:
        return error_page(request, 422, str(exc))

    @console.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error in the console")
        return error_page(request, 500, "Internal error; see the API's log.")

"""The FastAPI application: auth, error bodies, probes, and the routers."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import OperationalError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker_app.api.console import create_console
from worker_app.api.errors import ApiError
from worker_app.api.metrics import registry
from worker_app.api.routes import dlq, jobs, queues
from worker_app.api.schemas import errors
from worker_app.config import get_settings
from worker_app.errors import BrokerUnavailable, PayloadTooLarge, WorkerAppError
from worker_app.observability import tracing
from worker_app.redis_client import check_sentinel, get_redis

logger = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False)


async def require_token(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """Every ``/api`` route needs ``Authorization: Bearer $API_TOKEN`` when a token is set.

    A coroutine: it only compares strings, so it runs on the event loop instead of taking a
    thread of the pool the routes' Redis calls run in."""
    token = get_settings().api_token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise ApiError(401, "missing or wrong bearer token")


def _error(status: int, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": message, **details}, status_code=status)


def create_app() -> FastAPI:
    """Build the API (settings are read once, when it is created)."""
    settings = get_settings()
    check_sentinel(settings)
    if settings.api_token is None:
        logger.warning("API_TOKEN is not set: the job API accepts requests without a token")
    api = FastAPI(
        title="worker_app",
        version="0.1.0",
        description="Jobs, queues and the dead-letter queue.",
    )
    guarded = [Depends(require_token)]
    common = errors(401, 422, 503)
    for router in (jobs.router, dlq.router, queues.router):
        api.include_router(router, prefix="/api", dependencies=guarded, responses=common)
    _add_probes(api, guarded)
    api.mount("/ui", create_console())
    _add_error_handlers(api)
    tracing.instrument_api(api)
    return api


def _add_probes(api: FastAPI, guarded: list[Any]) -> None:
    metrics_registry = registry()

    @api.get("/health", tags=["probes"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @api.get("/ready", tags=["probes"], responses=errors(503))
    def ready() -> dict[str, str]:
        """Readiness: Redis answers."""
        get_redis().ping()
        return {"status": "ready"}

    @api.get(
        "/metrics",
        tags=["probes"],
        dependencies=guarded,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(401, 503)},
    )
    def metrics() -> Response:
        """Prometheus: queue depths, dead letters by reason, jobs by status, workers online."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc), **exc.details)

    @api.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _error(422, "invalid request", errors=errors)

    @api.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not even text: bad input like any other
            return _error(422, "invalid request", errors=[f"body: {exc.detail}"])
        return _error(exc.status_code, str(exc.detail))

    @api.exception_handler(redis.RedisError)
    @api.exception_handler(OperationalError)
    @api.exception_handler(BrokerUnavailable)
    @api.exception_handler(ConnectionError)  # Celery's result backend lets these through
    def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        logger.warning("answering 503: Redis is unreachable (%s)", exc)
        return _error(503, "Redis is unreachable; try again shortly")

    @api.exception_handler(PayloadTooLarge)
    def _too_large(_: Request, exc: PayloadTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @api.exception_handler(WorkerAppError)
    def _refused(_: Request, exc: WorkerAppError) -> JSONResponse:
        return _error(422, str(exc), errors=list(getattr(exc, "errors", [])))

    @api.exception_handler(Exception)
    def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return _error(500, "internal error; see the API's log")

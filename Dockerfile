# worker_app: one image for the worker, Flower, the API and the outbox relay (the command picks
# the process).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PATH="/app/.venv/bin:$PATH"

RUN pip install --no-cache-dir uv==0.13.9 \
    && useradd --create-home --uid 10001 app

WORKDIR /app
# Dependencies first, from the lock file only, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --extra postgres --no-install-project
COPY worker_app ./worker_app
RUN uv sync --frozen --no-default-groups --extra postgres && chown -R app:app /app

USER app
# The worker's probe; the web and flower services override it in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["worker-app", "health"]
# SIGTERM stops the worker within ASYNQ_SHUTDOWN_TIMEOUT (25s): give it a grace of at least
# that + 5s (docker stop -t 30, compose's stop_grace_period, Kubernetes' default 30s).
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker_app", "worker", "-Q", "critical,default,low"]

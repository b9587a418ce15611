# Everything bootstraps itself on a machine that has only Python 3.11+: uv is installed into
# .tools/, the locked dependencies into .venv/.
UV_VERSION := 0.13.9
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

# `make run` shows retries within seconds instead of the production backoff of 15 s.
export ASYNQ_RETRY_BACKOFF ?= 2s

.PHONY: install run test test-unit lint fmt bench bench-quick clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.synced

run: install  ## the dev worker on every queue, with a demo batch of jobs
	$(BIN)/worker-app dev --demo

test: install  ## the whole suite against private redis-server processes
	@command -v redis-server >/dev/null || { echo "redis-server is not on PATH: apt-get install redis-server"; exit 1; }
	$(BIN)/pytest

test-unit: install  ## tests/unit only: scripts, envelopes, config, payloads; no worker process
	@command -v redis-server >/dev/null || { echo "redis-server is not on PATH: apt-get install redis-server"; exit 1; }
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install  ## worker_app vs vanilla Celery vs Dramatiq, side by side on private redis-servers
	$(BIN)/python -m bench.compare --json bench/results.json
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.queue_order
	$(BIN)/python -m bench.dlq

bench-quick: install  ## the same, small (about 5 minutes)
	$(BIN)/python -m bench.compare --quick
	$(BIN)/python -m bench.api --seconds 5
	$(BIN)/python -m bench.queue_order --quick
	$(BIN)/python -m bench.dlq --entries 2000

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(TOOLS) $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache

"""enqueue_tx against a real PostgreSQL database of the test's own: the connection kinds it
takes, what it refuses, the schema commands and ``outbox status``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tests.helpers import e2e_tasks
from tests.helpers.env import BIN, ROOT, child_env
from tests.helpers.outbox import TcpProxy, private_database
from worker_app.config import get_settings
from worker_app.errors import InvalidPayload, UnknownQueue, UnknownTask
from worker_app.outbox import enqueue_tx
from worker_app.outbox.sql import OutboxTable

assert e2e_tasks.outbox_order  # registers the task in this process


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with private_database() as url:
        yield url


def cli(db_url: str, *args: str, table: str | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env(OUTBOX_DATABASE_URL=db_url, **({"OUTBOX_TABLE": table} if table else {}))
    return subprocess.run(
        [str(BIN / "worker-app"), "outbox", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def migrated(db_url: str) -> str:
    result = cli(db_url, "migrate")
    assert result.returncode == 0, result.stderr
    return db_url


@pytest.fixture
def conn(migrated: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated) as connection:
        connection.execute("TRUNCATE worker_app_outbox")
        connection.commit()
        yield connection


def outbox_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as other:
        return other.execute(
            "SELECT job_id::text, task, queue, payload, run_at, sent_at FROM worker_app_outbox"
        ).fetchall()


PAYLOAD = {"run": "r", "order_id": 7}


def test_migrate_twice_is_fine_and_sql_prints_the_same_schema(db_url: str) -> None:
    for _ in range(2):
        result = cli(db_url, "migrate")
        assert result.returncode == 0, result.stderr
        assert 'outbox table "worker_app_outbox" is ready' in result.stdout
    printed = cli(db_url, "sql").stdout
    assert printed == OutboxTable.parse("worker_app_outbox").ddl()
    assert "CREATE TABLE IF NOT EXISTS" in printed and "pg_notify" in printed


def test_a_schema_qualified_table_is_created_in_its_schema(db_url: str) -> None:
    for _ in range(2):
        result = cli(db_url, "migrate", table="jobs.outbox")
        assert result.returncode == 0, result.stderr
    with psycopg.connect(db_url) as other:
        found = other.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'jobs' AND tablename = 'outbox'"
        ).fetchone()
    assert found == (1,)


def test_a_bad_table_name_is_one_line(db_url: str) -> None:
    result = cli(db_url, "migrate", table="outbox; drop table users")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "OUTBOX_TABLE" in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_without_a_database_url_fail_in_one_line() -> None:
    env = child_env()
    env.pop("OUTBOX_DATABASE_URL", None)
    result = subprocess.run(
        [str(BIN / "worker-app"), "outbox", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: OUTBOX_DATABASE_URL is not set")


def test_status_before_migrate_says_to_migrate() -> None:
    with private_database() as url:
        result = cli(url, "status")
    assert result.returncode == 1
    assert "does not exist; run: worker-app outbox migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_psycopg_connection_commit_and_rollback(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    job_id = enqueue_tx(conn, "e2e.outbox_order", PAYLOAD)
    assert outbox_rows(migrated) == []  # not committed: invisible to anyone else
    conn.commit()
    rows = outbox_rows(migrated)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (job_id, "e2e.outbox_order", "default", PAYLOAD)
    ]
    enqueue_tx(conn, "e2e.outbox_order", PAYLOAD)
    conn.rollback()
    assert len(outbox_rows(migrated)) == 1


def test_sqlalchemy_connection_and_session(conn: psycopg.Connection[Any], migrated: str) -> None:
    engine = create_engine(migrated.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            first = enqueue_tx(connection, "e2e.outbox_order", PAYLOAD, queue="critical")
        with Session(engine) as session, session.begin():
            session.execute(text("SELECT 1"))
            second = enqueue_tx(session, e2e_tasks.outbox_order, PAYLOAD, countdown=60)
        with Session(engine) as session, session.begin():
            enqueue_tx(session, "e2e.outbox_order", PAYLOAD)
            session.rollback()
    finally:
        engine.dispose()
    rows = {r[0]: r for r in outbox_rows(migrated)}
    assert set(rows) == {first, second}
    assert rows[first][2] == "critical" and rows[first][4] is None
    assert rows[second][4] is not None  # run_at: the countdown


def test_invalid_input_raises_worker_app_errors_and_inserts_nothing(
    conn: psycopg.Connection[Any], migrated: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        enqueue_tx(conn, "e2e.outbox_order", {"run": "", "order_id": -1})
    assert len(caught.value.errors) == 2
    with pytest.raises(UnknownQueue):
        enqueue_tx(conn, "e2e.outbox_order", PAYLOAD, queue="nope")
    with pytest.raises(UnknownTask):
        enqueue_tx(conn, "no.such.task", {})
    conn.commit()
    assert outbox_rows(migrated) == []


def test_a_dead_connection_raises_psycopgs_own_error(migrated: str) -> None:
    host, port = "127.0.0.1", int(psycopg.conninfo.conninfo_to_dict(migrated).get("port") or 5432)
    proxy = TcpProxy((host, port)).start()
    try:
        dbname = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}", connect_timeout=5
        ) as dead:
            dead.execute("SELECT 1")
            proxy.cut()
            with pytest.raises(psycopg.OperationalError):
                enqueue_tx(dead, "e2e.outbox_order", PAYLOAD)
    finally:
        proxy.stop()


def test_status_json_counts_pending_and_sent(conn: psycopg.Connection[Any], migrated: str) -> None:
    for _ in range(3):
        enqueue_tx(conn, "e2e.outbox_order", PAYLOAD)
    conn.commit()
    conn.execute(
        "UPDATE worker_app_outbox SET sent_at = now() WHERE job_id = "
        "(SELECT job_id FROM worker_app_outbox LIMIT 1)"
    )
    conn.commit()
    result = cli(migrated, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["pending"] == 2 and status["sent"] == 1
    assert 0 <= status["oldest_pending_age"] < 60
    assert status["table"] == '"worker_app_outbox"'
    plain = cli(migrated, "status").stdout
    assert "pending  2" in plain


def test_the_password_of_the_database_url_is_never_shown(tmp_path: Path) -> None:
    env = child_env(OUTBOX_DATABASE_URL="postgresql://app:s3cret-pw@127.0.0.1:1/app")
    shown = subprocess.run(
        [str(BIN / "worker-app"), "config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    failed = subprocess.run(
        [str(BIN / "worker-app"), "outbox", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("error: PostgreSQL:")
    for out in (shown.stdout, shown.stderr, failed.stdout, failed.stderr):
        assert "s3cret-pw" not in out
    assert "postgresql://app:***@127.0.0.1:1/app" in shown.stdout


def test_metrics_show_the_outbox_only_when_configured(
    conn: psycopg.Connection[Any], migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import generate_latest

    from worker_app.api.metrics import registry

    assert b"worker_app_outbox" not in generate_latest(registry())
    enqueue_tx(conn, "e2e.outbox_order", PAYLOAD)
    conn.commit()
    monkeypatch.setenv("OUTBOX_DATABASE_URL", migrated)
    get_settings.cache_clear()
    try:
        text_out = generate_latest(registry()).decode()
    finally:
        monkeypatch.delenv("OUTBOX_DATABASE_URL")
        get_settings.cache_clear()
    assert "worker_app_outbox_up 1.0" in text_out
    assert "worker_app_outbox_pending 1.0" in text_out
    assert "worker_app_outbox_oldest_pending_age_seconds" in text_out


def test_without_psycopg_worker_app_imports_and_the_outbox_says_what_is_missing() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if the postgres extra were not installed\n"
        "import worker_app, worker_app.outbox, worker_app.cli.main\n"
        "from worker_app import enqueue_tx\n"
        "worker_app.cli.main.main(['outbox', 'status'])\n"
    )
    env = child_env(OUTBOX_DATABASE_URL="postgresql://app@127.0.0.1:1/app")
    result = subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: the outbox needs psycopg 3: pip install 'worker-app[postgres]'\n"
    )


def test_a_relay_without_its_table_says_to_migrate() -> None:
    with private_database() as url:
        result = cli(url, "relay")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'error: the outbox table "worker_app_outbox" does not exist; run: worker-app outbox migrate'
    )
    assert "Traceback" not in result.stderr

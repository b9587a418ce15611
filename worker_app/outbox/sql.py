"""The outbox table in PostgreSQL: its schema as plain SQL, and every statement run against it.

The schema is printed by ``worker-app outbox sql`` for teams that keep their own migrations, and
applied by ``worker-app outbox migrate`` (idempotent). Names come from ``OUTBOX_TABLE``, which
the settings already restrict to identifiers (letters, digits, ``_``, one optional schema), and
are always double-quoted, so they are taken literally.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker_app.config import Settings, get_settings
from worker_app.errors import OutboxUnavailable

if TYPE_CHECKING:
    import psycopg

#: PostgreSQL truncates longer identifiers (and refuses longer NOTIFY channels).
MAX_IDENTIFIER = 63
#: Seconds to wait for a connection before calling PostgreSQL unreachable.
CONNECT_TIMEOUT = 5
#: TCP keepalives, so a connection to a vanished server fails within about half a minute
#: instead of hanging the relay on a half-open socket.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
#: Key of the advisory lock that serialises concurrent ``migrate`` runs (``CREATE ... IF NOT
#: EXISTS`` is not safe against a concurrent twin).
MIGRATE_LOCK = 0x776F726B6572


def load_psycopg() -> Any:
    """The ``psycopg`` module, imported on first use so worker_app works without it.

    Raises:
        OutboxUnavailable: the ``postgres`` extra is not installed.
    """
    try:
        import psycopg
    except ImportError:
        raise OutboxUnavailable(
            "the outbox needs psycopg 3: pip install 'worker-app[postgres]'"
        ) from None
    return psycopg


def database_url(settings: Settings | None = None) -> str:
    """``OUTBOX_DATABASE_URL`` as libpq takes it (an SQLAlchemy ``+psycopg`` scheme dropped).

    Raises:
        OutboxUnavailable: the variable is not set.
    """
    secret = (settings or get_settings()).outbox_database_url
    if secret is None:
        raise OutboxUnavailable(
            "OUTBOX_DATABASE_URL is not set; expected postgresql://user[:password]@host/database"
        )
    url = secret.get_secret_value()
    return "postgresql://" + url.split("://", 1)[1] if url.startswith("postgresql+") else url


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "worker_app"
) -> psycopg.Connection[Any]:
    """A new connection to the outbox database (``application_name`` shows in
    ``pg_stat_activity``).

    Raises:
        OutboxUnavailable: psycopg is not installed.
        psycopg.OperationalError: the database is unreachable.
    """
    conn: psycopg.Connection[Any] = load_psycopg().connect(
        url,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT,
        application_name=application_name,
        **KEEPALIVES,
    )
    return conn


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _short(name: str) -> str:
    """``name`` within PostgreSQL's identifier length, kept unique by a digest when cut."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


@dataclass(frozen=True)
class OutboxTable:
    """The outbox table named by ``OUTBOX_TABLE`` and the names derived from it."""

    schema: str | None
    name: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> OutboxTable:
        return cls.parse((settings or get_settings()).outbox_table)

    @classmethod
    def parse(cls, qualified: str) -> OutboxTable:
        schema, _, name = qualified.rpartition(".")
        return cls(schema or None, name)

    def _object(self, suffix: str) -> str:
        """A schema-qualified, quoted name for an object that belongs to the table."""
        own = _quote(_short(f"{self.name}_{suffix}"))
        return f"{_quote(self.schema)}.{own}" if self.schema else own

    @property
    def qualified(self) -> str:
        """The table as SQL names it, quoted."""
        return f"{_quote(self.schema)}.{_quote(self.name)}" if self.schema else _quote(self.name)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel on which a committed insert wakes the relays."""
        return _short(f"{self.schema}.{self.name}" if self.schema else self.name)

    def ddl(self) -> str:
        """The schema as plain SQL: table, indexes, the NOTIFY trigger. Safe to run again."""
        schema = f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)};\n\n" if self.schema else ""
        notify = self._object("notify")
        channel = self.channel.replace("'", "''")
        return f"""{schema}-- worker_app outbox: a row per job enqueued with enqueue_tx,
-- published by `worker-app outbox relay` once its transaction has committed.
CREATE TABLE IF NOT EXISTS {self.qualified} (
    job_id     uuid PRIMARY KEY,      -- the Celery task id the job runs under
    task       text NOT NULL,         -- registered task name
    queue      text NOT NULL,
    payload    jsonb NOT NULL,        -- keyword arguments, validated when enqueued
    run_at     timestamptz,           -- not before (countdown); NULL: as soon as committed
    headers    jsonb NOT NULL DEFAULT '{{}}',  -- trace context of the enqueueing transaction
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at    timestamptz            -- published; deleted ASYNQ_RETENTION later
);
-- Relays claim the oldest unsent rows; the index holds only those, so it stays small.
CREATE INDEX IF NOT EXISTS {_quote(_short(self.name + "_unsent"))}
    ON {self.qualified} (created_at) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS {_quote(_short(self.name + "_sent"))}
    ON {self.qualified} (sent_at) WHERE sent_at IS NOT NULL;
-- NOTIFY is delivered at commit (never for a rollback): relays wake within milliseconds.
CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {_quote(_short(self.name + "_notify"))} ON {self.qualified};
CREATE TRIGGER {_quote(_short(self.name + "_notify"))}
    AFTER INSERT ON {self.qualified} FOR EACH STATEMENT EXECUTE FUNCTION {notify}();
"""

    def insert(self) -> str:
        """One job row; ``%(name)s`` parameters (psycopg, and any pyformat DB-API driver)."""
        return (
            f"INSERT INTO {self.qualified} (job_id, task, queue, payload, run_at, headers) "
            "VALUES (CAST(%(job_id)s AS uuid), %(task)s, %(queue)s, CAST(%(payload)s AS jsonb), "
            "CAST(%(run_at)s AS timestamptz), CAST(%(headers)s AS jsonb))"
        )

    def claim(self) -> str:
        """The oldest committed unsent rows no other relay holds, locked until commit."""
        return (
            f"SELECT job_id::text, task, queue, payload::text, run_at, "
            f"extract(epoch FROM created_at)::float8, headers::text FROM {self.qualified} "
            "WHERE sent_at IS NULL ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED"
        )

    def mark_sent(self) -> str:
        return (
            f"UPDATE {self.qualified} SET sent_at = clock_timestamp() "
            "WHERE job_id = ANY(CAST(%s AS uuid[]))"
        )

    def purge(self) -> str:
        """Delete up to ``%s`` rows sent more than ``%s`` seconds ago."""
        return (
            f"DELETE FROM {self.qualified} WHERE job_id IN (SELECT job_id FROM "
            f"{self.qualified} WHERE sent_at < clock_timestamp() - %s * interval '1 second' "
            "LIMIT %s)"
        )

    def status(self) -> str:
        """Unsent rows, the age in seconds of the oldest, and sent rows still kept."""
        return (
            "SELECT count(*) FILTER (WHERE sent_at IS NULL), "
            "coalesce(extract(epoch FROM clock_timestamp() - min(created_at) "
            "FILTER (WHERE sent_at IS NULL)), 0)::float8, "
            f"count(*) FILTER (WHERE sent_at IS NOT NULL) FROM {self.qualified}"
        )


def migrate(conn: psycopg.Connection[Any], table: OutboxTable) -> None:
    """Create the table, its indexes and trigger when missing, in one transaction.

    Raises:
        psycopg.Error: the database refused (unreachable, no privilege).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(table.ddl())

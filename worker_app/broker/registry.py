"""The product's Lua scripts, loaded from ``scripts/*.lua`` through one registry.

A script receives the keys it names from :data:`SCRIPT_KEYS` (from :mod:`worker_app.keys`) as its
leading ``KEYS[1..NK]``, named in a prelude the registry writes (``K.job``, ``K.held``, ...), so
no script spells a key; its own keys follow at ``KEYS[NK + 1]``. Header names reach it the same way
(``H``). A line ``--! use records`` includes ``records.lua``, the functions shared by every
script that changes a job record, so each transition is written once.

A reply ``NOSCRIPT`` (the server restarted or failed over and lost its script cache) loads every
script again and retries the call once.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker_app import keys
from worker_app.config import get_settings

#: The keys every script receives first, in this order, by the name the scripts use.
SCRIPT_KEYS: dict[str, str] = {
    "job": keys.JOB,
    "jobs_index": keys.JOBS_INDEX,
    "by_status": keys.JOBS_BY_STATUS,
    "by_type": keys.JOBS_BY_TYPE,
    "by_queue": keys.JOBS_BY_QUEUE,
    "wait": keys.WAIT,
    "held": keys.HELD,
    "held_index": keys.HELD_INDEX,
    "held_raw": keys.HELD_RAW,
    "running": keys.RUNNING,
    "deaths": keys.DEATHS,
    "delayed": keys.DELAYED,
    "wake": keys.WAKE,
    "celery_result": keys.CELERY_RESULT,
    "dlq_entry": keys.DLQ_ENTRY,
    "dlq_index": keys.DLQ_INDEX,
    "dlq_by": keys.DLQ_BY,
    "dlq_values": keys.DLQ_VALUES,
    "dlq_trimmed": keys.DLQ_TRIMMED,
}
#: Header names, tag prefixes and limits the scripts read, by the name they use.
SCRIPT_NAMES: dict[str, str] = {
    "publish_once": keys.PUBLISH_ONCE,
    "deferred": keys.DEFERRED,
    "raw_tag": keys.RAW_TAG,
    "poison_deaths": str(keys.POISON_DEATHS),
    "deaths_ttl": str(keys.DEATHS_TTL),
}
_USE = re.compile(r"^--! use (\w+)\s*$", re.MULTILINE)


_NAMED = re.compile(r"\bK\.(\w+)")


def _lua_table(values: dict[str, str], index: bool) -> str:
    if index:
        fields = (f"{name} = KEYS[{n}]" for n, name in enumerate(values, 1))
    else:
        fields = (f"{name} = {_lua_string(value)}" for name, value in values.items())
    return "{" + ", ".join(fields) + "}"


def _lua_string(value: str) -> str:
    """A Lua string literal of ``value`` (its UTF-8 bytes, each escaped unless alphanumeric)."""
    escaped = "".join(chr(b) if chr(b).isalnum() else f"\\{b:03d}" for b in value.encode())
    return f'"{escaped}"'


def _read(name: str) -> str:
    return (resources.files(__package__) / "scripts" / f"{name}.lua").read_text()


def _source(name: str) -> tuple[str, list[str]]:
    """A script's whole source (prelude, libraries, body) and the leading keys it receives."""
    body = _read(name)
    code = [_read(used) for used in _USE.findall(body)] + [_USE.sub("", body)]
    named = set(_NAMED.findall("\n".join(code)))
    unknown = named - set(SCRIPT_KEYS)
    if unknown:
        raise ValueError(f"{name}.lua names keys that keys.py lacks: {', '.join(sorted(unknown))}")
    used = {key: value for key, value in SCRIPT_KEYS.items() if key in named}
    prelude = [
        f"local NK = {len(used)}",
        f"local K = {_lua_table(used, index=True)}",
        f"local H = {_lua_table(SCRIPT_NAMES, index=False)}",
    ]
    return "\n".join(prelude + code), list(used.values())


class Script:
    """One script: called through a client, or packed as a command to send on a connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source, self.fixed = _source(name)
        self.packed_fixed = pack_args(*self.fixed)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        #: Running it twice has the effect of once: a call whose reply was lost is sent again.
        self.idempotent = name in IDEMPOTENT

    def args(self, own_keys: list[str], args: list[Any]) -> list[Any]:
        """The arguments of ``EVALSHA`` for this script with ``own_keys`` and ``args``."""
        return [self.sha, len(self.fixed) + len(own_keys), *self.fixed, *own_keys, *args]

    def command(self, own_keys: list[str], args: list[Any]) -> bytes:
        """The whole ``EVALSHA`` command, packed (the leading keys are packed once)."""
        head = pack_args(b"EVALSHA", self.sha, len(self.fixed) + len(own_keys))
        return join_packed(3 + len(self.fixed), head + self.packed_fixed, [*own_keys, *args])

    def __call__(
        self, client: Any, own_keys: list[str] | None = None, args: Any = (), *, held: bool = False
    ) -> Any:
        """Run the script (on this thread's own connection when ``held``: see
        :func:`run_held`); after ``NOSCRIPT`` load every script and run it again once."""
        command = self.command(own_keys or [], list(args))
        run = run_held if held else run_packed
        try:
            return run(client, command, resend=self.idempotent)
        except NoScriptError:
            load_all(client)
            return run(client, command, resend=self.idempotent)

    def replicated(
        self, client: Any, own_keys: list[str], args: Any, replicas: int, timeout_ms: int
    ) -> tuple[Any, int, str, tuple[str, int]]:
        """Run the script on this thread's own connection, then ``WAIT`` until ``replicas``
        replicas have its writes (at most ``timeout_ms``) and ask the server's ``ROLE``, in the
        same round trip; returns the script's reply, how many replicas confirmed, the role and
        the server's address (see :func:`run_held_waiting`)."""
        command = self.command(own_keys, list(args))
        wait = pack_command("WAIT", replicas, timeout_ms)
        try:
            return run_held_waiting(client, command, wait, resend=self.idempotent)
        except NoScriptError:
            load_all(client)
            return run_held_waiting(client, command, wait, resend=self.idempotent)


class _Held(threading.local):
    """The connections a thread keeps for its publishes, one per client pool, outside the
    pools: a pool's check-out probes the socket and takes a lock, a third of a one-command
    call's Python time."""

    pid = 0
    connections: dict[int, tuple[Any, Any]] | None = None


_held = _Held()


def _held_connection(client: Any) -> Any:
    held = _held
    pool = client.connection_pool
    if held.connections is None or held.pid != os.getpid():
        held.connections, held.pid = {}, os.getpid()
    kept = held.connections.get(id(pool))
    if kept is None or kept[0] is not pool:
        kept = held.connections[id(pool)] = (pool, pool.connection_class(**pool.connection_kwargs))
    connection = kept[1]
    if getattr(pool, "is_master", False) and not _on_pool_master(pool, connection):
        connection.disconnect()  # the master moved (MasterWatch): reconnect through Sentinel
    return connection


def _on_pool_master(pool: Any, connection: Any) -> bool:
    """Whether a Sentinel-managed ``connection`` (if connected) reaches the server its pool last
    knew as the master (addresses only: a pool not yet reset after a fork is still right)."""
    if getattr(connection, "_sock", None) is None or pool.master_address is None:
        return True
    return bool((connection.host, connection.port) == tuple(pool.master_address))


def held_on_master(client: Any) -> bool:
    """Before a publish: whether this thread's publish connection to ``client``'s server reaches
    the master (:func:`serves_master`); if not, it is disconnected and reconnects to the new
    one. True without Sentinel."""
    pool = client.connection_pool
    if not getattr(pool, "is_master", False):
        return True
    connection = _held_connection(client)
    if getattr(connection, "_sock", None) is None:
        connection.connect()  # to the master the sentinels name: which one is checked below
    if serves_master(pool, (connection.host, connection.port)):
        return True
    connection.disconnect()
    return False


def drop_held(client: Any, address: tuple[str, int]) -> None:
    """Disconnect this thread's publish connection to ``client``'s server if it reaches
    ``address`` (a server that is no longer the master): the next publish reconnects."""
    connection = _held_connection(client)
    if getattr(connection, "_sock", None) is not None and (
        connection.host,
        connection.port,
    ) == tuple(address):
        connection.disconnect()


def serves_master(pool: Any, address: tuple[str, int]) -> bool:
    """Whether the server at ``address`` is the master of Sentinel-managed ``pool``, as the
    sentinels say now: none that answers is failing it over (in the failover's first second
    the replica is promoted while the sentinels still name the old master, which takes writes
    it drops when it becomes a replica), and the one with the newest configuration
    (``config-epoch``: a failover's leader knows it first) names it. False when none answers.
    True without Sentinel."""
    if not getattr(pool, "is_master", False):
        return True
    newest: dict[str, Any] | None = None
    for sentinel in pool.sentinel_manager.sentinels:
        try:
            state = sentinel.sentinel_master(pool.service_name)
        except RedisError:
            continue  # down, or it knows no such master: the others tell
        flags = state.get("flags", "")
        if "failover_in_progress" in (flags if isinstance(flags, str) else ",".join(flags)):
            return False
        if newest is None or int(state.get("config-epoch", 0)) > int(newest.get("config-epoch", 0)):
            newest = state
    if newest is None:
        return False
    return (str(newest.get("ip")), int(newest.get("port", 0))) == (address[0], int(address[1]))


def run_held(client: Any, command: bytes, *, resend: bool = False) -> Any:
    """:func:`run_packed` on this thread's own connection to ``client``'s server.

    The connection has the pool's settings (timeouts, TLS, Sentinel, health checks) and is
    made again after a fork; one that failed is disconnected and reconnects on the next call.
    It closes when its thread ends.
    """
    return _run_on(_held_connection(client), command, resend)


def run_held_waiting(
    client: Any, command: bytes, wait: bytes, *, resend: bool = False
) -> tuple[Any, int, str, tuple[str, int]]:
    """:func:`run_held` with ``WAIT`` and ``ROLE`` sent behind the command in the same write,
    on the same connection; returns the command's reply, the replicas that confirmed, the
    server's role and its address (host, port). Once the command's reply is read the command
    is never sent again: a lost ``WAIT`` or ``ROLE`` reply reads as no replica and no longer
    the master."""
    connection = _held_connection(client)
    reply = _run_on(connection, command, resend, then=[wait, ROLE])
    address = (connection.host, connection.port)  # before a lost reply disconnects it
    return reply, *_confirmation(connection), address


ROLE = b"*1\r\n$4\r\nROLE\r\n"


def _confirmation(connection: Any) -> tuple[int, str]:
    """Read the ``WAIT`` and ``ROLE`` replies that follow a command on ``connection``."""
    replies: list[Any] = []
    for _ in range(2):
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:  # WAIT or ROLE refused (an ACL without them)
            replies.append(exc)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            connection.disconnect()
            return (replies[0] if replies and isinstance(replies[0], int) else 0), "unreachable"
    acked, role = replies
    acked = acked if isinstance(acked, int) else 0
    if isinstance(role, ResponseError):
        return acked, "unknown"
    first = role[0] if isinstance(role, list | tuple) and role else role
    return acked, first.decode() if isinstance(first, bytes) else str(first)


def run_packed(client: Any, command: bytes, *, resend: bool = False) -> Any:
    """Send a packed command on a connection of ``client``'s pool and read its reply.

    A send that failed on a connection gone stale in the pool is tried once more on a new one.
    A command whose reply was lost may have run: it is sent again only when ``resend`` says
    that running it twice does no harm (redis-py's own retry would resend any command).
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        return _run_on(connection, command, resend)
    finally:
        pool.release(connection)


def _run_on(connection: Any, command: bytes, resend: bool, then: list[bytes] | None = None) -> Any:
    """Send ``command`` (and the commands ``then`` behind it, whose replies the caller reads
    next) on ``connection`` and read the command's reply."""
    for attempt in (1, 2):
        try:
            # Connected through the connection's own ``connect``: a Sentinel-managed one asks
            # the sentinels for the master there (a send on a closed connection would connect
            # to its default address instead).
            connection.connect()
            connection.send_packed_command([command, *(then or ())])
        except (RedisConnectionError, OSError):
            connection.disconnect()
            if attempt == 2:
                raise
            continue
        try:
            return connection.read_response()
        except ResponseError:
            for _ in then or ():  # the replies behind it, to keep the connection in step
                try:
                    connection.read_response()
                except ResponseError:
                    pass
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError):
            connection.disconnect()
            if not resend or attempt == 2:
                raise
        except BaseException:
            connection.disconnect()
            raise
    raise AssertionError("unreachable")


@cache
def script(name: str) -> Script:
    """The script ``scripts/<name>.lua``."""
    return Script(name)


#: Every script of the product (``records`` and ``dlq`` are libraries, never run alone), and
#: whether it is idempotent: a second run changes nothing the first did not (compare-and-set,
#: writes of the same values, or ``publish`` by job id), so a call whose reply was lost is sent
#: again.
SCRIPTS: dict[str, bool] = {
    "publish": True,
    "publish_batch": False,
    "fetch": False,
    "release": True,
    "renew": True,
    "restore": True,
    "start": False,
    "finish": True,
    "result": True,
    "cancel": True,
    "purge": False,
    "presence": True,
    "orphan": True,
    "dlq_add": True,
    "dlq_remove": True,
    "dead": True,
    "concurrency": True,
    "ratelimit": False,
}
NAMES = tuple(SCRIPTS)
IDEMPOTENT = frozenset(name for name, again in SCRIPTS.items() if again)


def pack_args(*args: Any) -> bytes:
    """Arguments in Redis's protocol, as redis-py would send them (strings as UTF-8, floats by
    ``repr``, other values by ``str``), in a fraction of its time for commands with many
    arguments (the fetch has one per queue list, slot and ack); without the count header."""
    out: list[bytes] = []
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def pack_command(*args: Any) -> bytes:
    """One whole command in Redis's protocol (see :func:`pack_args`)."""
    return b"*%d\r\n" % len(args) + pack_args(*args)


def join_packed(count: int, packed: bytes, rest: list[Any]) -> bytes:
    """A command of ``count`` arguments already packed in ``packed``, followed by ``rest``."""
    return b"*%d\r\n" % (count + len(rest)) + packed + pack_args(*rest)


def now_iso(now: float) -> str:
    """Unix time as ISO 8601 text in UTC, as Celery writes ``date_done``."""
    return datetime.fromtimestamp(now, UTC).isoformat()


@cache
def retention() -> int:
    """``ASYNQ_RETENTION`` in whole seconds (at least 1), as the scripts take it."""
    return int(max(1, get_settings().retention.total_seconds()))


def load_all(client: Any) -> None:
    """Load every script into the server's cache (after a restart or failover emptied it)."""
    for name in NAMES:
        client.script_load(script(name).source)

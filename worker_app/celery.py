"""The Celery application, its whole configuration derived from :class:`Settings` in one place."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from kombu import Exchange, Queue

from worker_app import keys
from worker_app.broker.envelope import PRIORITY_STEPS
from worker_app.config import ConfigError, Settings, get_settings, sentinel_master, sentinel_tls
from worker_app.errors import UnknownTask
from worker_app.redis_client import (
    HEALTH_CHECK_INTERVAL,
    SOCKET_CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    sentinel_kwargs,
)

# The soft time limit fires this share of the hard limit earlier (at most 30 s), so the task can
# be retried cleanly before the pool kills it.
SOFT_LIMIT_SHARE = 0.1
SOFT_LIMIT_MARGIN_MAX = 30.0
# How long the pool waits for a result from a process that died before it calls the job lost.
# With acks_late nothing is lost by deciding fast, and poison pills are counted promptly
# (Celery's 10 s default lets a task's hard time limit fire first).
WORKER_LOST_WAIT = 1.0
# The worker's bootsteps, by dotted path as Celery loads its own: loading the app (in a web
# process, say) never imports the worker side.
WORKER_STEPS = {
    f"worker_app.worker.steps:{name}"
    for name in (
        "Heartbeat",
        "LeaseRenewer",
        "HeldSweeper",
        "StatsLine",
        "DelayReleaser",
        "WaitFlusher",
        "TimerCompactor",
    )
}
# Publishing does not hang while Redis is away: three quick tries, then the caller gets an error.
PUBLISH_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


def _redis_urls(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The URL as Celery takes it, and the transport options it implies."""
    url = settings.redis_url
    options: dict[str, Any] = {}
    if url.startswith("sentinel://"):
        options["master_name"] = sentinel_master(url)
        options["sentinel_kwargs"] = sentinel_kwargs(url)
        url = ";".join(urlunsplit(urlsplit(part)._replace(query="")) for part in url.split(";"))
    return url, options


def stay_on_sentinels(alternates: list[str]) -> Iterator[str]:
    """kombu's failover strategy for a sentinel URL: stay put. kombu's Sentinel channel asks
    every sentinel the URL names for the master at each connect, so there is nothing to rotate;
    and kombu's switch to one of the URL's parts would also replace the transport with its own
    (chosen by the part's scheme, ``sentinel``), dropping the product's fetch, acks and records
    after the first reconnect. A host name without a scheme keeps the transport."""
    host = urlsplit(alternates[0]).hostname or "localhost"
    while True:
        yield host


def _ssl_options(settings: Settings) -> dict[str, Any] | None:
    """``rediss://`` verifies the server certificate unless the URL says ``ssl_cert_reqs``;
    a sentinel URL with ``ssl=true`` says it for the master (:func:`sentinel_tls`)."""
    tls = sentinel_tls(settings.redis_url)
    if tls:
        return {k: v for k, v in tls.items() if k != "ssl"}
    if not settings.redis_url.startswith("rediss://") or "ssl_cert_reqs" in settings.redis_url:
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting worker_app relies on, derived from ``settings``."""
    url, url_options = _redis_urls(settings)
    hard = settings.task_timeout.total_seconds()
    soft = hard - min(hard * SOFT_LIMIT_SHARE, SOFT_LIMIT_MARGIN_MAX)
    shutdown = settings.shutdown_timeout.total_seconds()
    socket_options = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": False,
    }
    transport = {
        **url_options,
        **socket_options,
        "visibility_timeout": settings.visibility_timeout.total_seconds(),
        # Weighted (or strict) queue order, drawn afresh for every fetch.
        "queue_order_strategy": "worker_app.broker.queues:WeightedOrder",
        # kombu's default priority lists, read in priority order within each queue: a plain
        # Celery producer's messages with any priority are consumed.
        "priority_steps": list(PRIORITY_STEPS),
    }
    use_ssl = _ssl_options(settings)
    queues = [
        Queue(name, Exchange(name, type="direct"), routing_key=name)
        for name in settings.queue_names
    ]
    default = settings.default_queue
    transport_class = "SentinelTransport" if url.startswith("sentinel://") else "Transport"
    return {
        "broker_url": url,
        # kombu's Redis transport bound to the product's protocol (worker_app.broker).
        "broker_transport": f"worker_app.broker.transport:{transport_class}",
        "worker_consumer": "worker_app.worker.consumer:Consumer",
        # Results are read from job records, which every job has anyway: nothing is written
        # per task for Celery's result API (AsyncResult.get and .state still work).
        "result_backend": "worker_app.jobs.results:JobRecordBackend",
        "broker_transport_options": transport,
        "broker_use_ssl": use_ssl,
        **(
            {"broker_failover_strategy": stay_on_sentinels}
            if transport_class != "Transport"
            else {}
        ),
        "broker_connection_retry_on_startup": True,
        # An error reply while the consumer (re)connects (BUSY from a long script, LOADING after
        # a restart, READONLY from a demoted master) is a reason to reconnect, not to stop the
        # worker: kombu counts those replies as channel errors, which Celery otherwise lets kill it.
        "broker_channel_error_retry": True,
        "broker_connection_timeout": SOCKET_CONNECT_TIMEOUT,
        # JSON only, both ways: pickle is refused on receipt and never produced.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At least once: ack after the task ran; a lost pool process puts the message back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A lost connection does not stop running tasks: their messages stay held (leases
        # renewed) and are acked through the next connection (worker_app.broker.qos).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_lost_wait": WORKER_LOST_WAIT,
        "task_time_limit": hard,
        "task_soft_time_limit": soft,
        "result_expires": settings.retention,
        "worker_concurrency": settings.concurrency,
        "worker_soft_shutdown_timeout": shutdown,
        "task_queues": queues,
        "task_default_queue": default,
        "task_default_exchange": default,
        "task_default_routing_key": default,
        "task_create_missing_queues": False,
        "task_routes": ("worker_app.broker.queues:route_task",),
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # Task events cost a PUBLISH per state change, read only by Flower: off until a Flower
        # asks for them (it sends enable_events to every worker every few seconds while it runs).
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "imports": ("worker_app.tasks",),
        **_beat_config(settings, socket_options, use_ssl),
    }


def _beat_config(
    settings: Settings, socket_options: dict[str, Any], use_ssl: dict[str, Any] | None
) -> dict[str, Any]:
    """celery-redbeat on the app's Redis: schedule and lock under worker_app's prefix."""
    # Retry a lost connection without end (-1): beat waits out a Redis outage.
    options: dict[str, Any] = {**socket_options, "retry_period": -1}
    url = settings.redis_url
    if url.startswith("sentinel://"):
        hosts = [urlsplit(part) for part in url.split(";")]
        options["sentinels"] = [(h.hostname, h.port or 26379) for h in hosts]
        options["service_name"] = sentinel_master(url)
        if hosts[0].password:
            options["password"] = hosts[0].password
        options["sentinel_kwargs"] = sentinel_kwargs(url)
        url = "redis-sentinel://"
    return {
        "beat_scheduler": "worker_app.flow.beat:Scheduler",
        "beat_max_loop_interval": keys.BEAT_TICK_MAX,
        "redbeat_redis_url": url,
        "redbeat_redis_options": options,
        "redbeat_redis_use_ssl": use_ssl,
        "redbeat_key_prefix": keys.BEAT,
        "redbeat_lock_timeout": keys.BEAT_LOCK_TTL,
    }


def create_app(settings: Settings) -> Celery:
    """Build the worker_app Celery application from ``settings``."""
    celery_app = Celery(
        "worker_app", task_cls="worker_app.task:BaseTask", amqp="worker_app.broker.amqp:AMQP"
    )
    celery_app.conf.update(celery_config(settings))

    celery_app.steps["worker"].update(WORKER_STEPS)
    celery_app.steps["consumer"].add("worker_app.worker.consumer:BindChannel")
    return celery_app


def get_task(name: str) -> Any:
    """The registered task called ``name``.

    Raises:
        UnknownTask: no task of that name is registered; the message lists the known ones.
    """
    if name not in app.tasks:
        app.loader.import_default_modules()
    try:
        return app.tasks[name]
    except KeyError:
        known = sorted(n for n in app.tasks if not n.startswith("celery."))
        raise UnknownTask(f"unknown task {name!r}; registered tasks: {', '.join(known)}") from None


def reconfigure(celery_app: Celery, settings: Settings) -> None:
    """Re-derive ``celery_app``'s configuration, before it has connected anywhere."""
    celery_app.conf.update(celery_config(settings))


try:
    _settings = get_settings()
except ConfigError as error:
    # Stop here, before anything connects, with one line per problem and no traceback.
    raise SystemExit("\n".join(f"configuration error: {line}" for line in error.lines)) from None

app = create_app(_settings)

import worker_app.observability.signals  # noqa: E402,F401  - connects the hooks to this app's signals

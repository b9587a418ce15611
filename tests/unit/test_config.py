"""Every variable of the configuration: accepted forms, refused forms, one-line errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest

from worker_app.config import (
    ConfigError,
    Settings,
    get_settings,
    load_settings,
    replicas_to_wait,
    sentinel_tls,
    variable_of,
)
from worker_app.durations import format_duration, parse_duration

# variable, a good value, what it parses to (None: not checked), a bad value
CASES: list[tuple[str, str, object, str | None]] = [
    ("REDIS_URL", "rediss://:pw@cache.example:6380/2", None, "http://localhost:6379"),
    (
        "REDIS_URL",
        "sentinel://s1:26379;sentinel://s2:26379/0?master_name=main",
        None,
        "sentinel://s1:26379",
    ),
    ("REDIS_URL", "redis://localhost/3", None, "redis://localhost:6379/zero"),
    ("REDIS_URL", "redis://localhost/3", None, "redis://a:6379;redis://b:6379"),
    (
        "REDIS_URL",
        "sentinel://s1:26379;sentinel://s2:26379/0?master_name=main&ssl=true&ssl_cert_reqs=none",
        None,
        "sentinel://s1:26379/0?master_name=main&ssl=yes",
    ),
    (
        "REDIS_URL",
        "sentinel://s1:26379/0?master_name=main&ssl=true",
        None,
        "sentinel://s1:26379/0?master_name=main&ssl=true&ssl_ca_certs=/no/such/ca.crt",
    ),
    ("APP_ENV", "test", "test", "staging"),
    ("LOG_LEVEL", "WARNING", "warning", "loud"),
    ("LOG_FORMAT", "json", "json", "xml"),
    ("ASYNQ_CONCURRENCY", "12", 12, "0"),
    ("ASYNQ_CONCURRENCY", "1", 1, "two"),
    (
        "ASYNQ_QUEUES",
        "critical:6,default:3,low:1",
        {"critical": 6, "default": 3, "low": 1},
        "critical:x",
    ),
    ("ASYNQ_QUEUES", "emails:2", {"emails": 2}, "a:1,a:2"),
    ("ASYNQ_QUEUES", "high:10, low:1", {"high": 10, "low": 1}, "high:0"),
    ("ASYNQ_QUEUES", "x:1", {"x": 1}, "bad name:1"),
    ("ASYNQ_STRICT_PRIORITY", "true", True, "maybe"),
    ("ASYNQ_MAX_RETRY", "0", 0, "-1"),
    ("ASYNQ_RETRY_BACKOFF", "300ms", timedelta(milliseconds=300), "fast"),
    ("ASYNQ_RETRY_BACKOFF_MAX", "1h30m", timedelta(minutes=90), "0s"),
    ("ASYNQ_TASK_TIMEOUT", "90", timedelta(seconds=90), "5x"),
    ("ASYNQ_SHUTDOWN_TIMEOUT", "1m", timedelta(minutes=1), "-5s"),
    ("ASYNQ_VISIBILITY_TIMEOUT", "90s", timedelta(seconds=90), "soon"),
    ("ASYNQ_RETENTION", "2d", timedelta(days=2), "1 day"),
    ("ASYNQ_DLQ_RETENTION", "2160h", timedelta(days=90), "h"),
    ("ASYNQ_DLQ_MAX_SIZE", "500", 500, "0"),
    ("ASYNQ_MAX_PAYLOAD", "512KiB", 524288, "huge"),
    ("ASYNQ_PUBLISH_REPLICAS", "2", 2, "-1"),
    ("ASYNQ_HEALTH_CHECK_INTERVAL", "5s", timedelta(seconds=5), "0"),
    ("ASYNQ_STATS_INTERVAL", "2.5s", timedelta(seconds=2.5), "1y"),
    ("API_TOKEN", "a-long-enough-api-token", None, None),
    ("FLOWER_BASIC_AUTH", "admin:correct-horse", None, "admin"),
    ("FLOWER_PORT", "8555", 8555, "70000"),
    ("FLOWER_URL", "https://flower.example.com", "https://flower.example.com", "flower:5555"),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://collector:4318",
        "http://collector:4318",
        "collector:4318",
    ),
    ("OTEL_TRACES_EXPORTER", "otlp,console", "otlp,console", "zipkin"),
    ("OTEL_SERVICE_NAME", "briefings", "briefings", None),
    ("OUTBOX_DATABASE_URL", "postgresql://app:pw@db/app", None, "mysql://app@db/app"),
    ("OUTBOX_TABLE", "jobs.outbox", "jobs.outbox", "outbox; drop table users"),
]


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_every_variable_is_covered() -> None:
    covered = {name for name, *_ in CASES}
    assert covered == {variable_of(name) for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("name", "good", "parsed", "bad"), CASES, ids=[f"{c[0]}={c[1]}" for c in CASES]
)
def test_a_good_value_is_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, good: str, parsed: object, bad: str | None
) -> None:
    monkeypatch.setenv(name, good)
    settings = load_settings()
    if parsed is not None:
        assert getattr(settings, name.lower().removeprefix("asynq_")) == parsed


@pytest.mark.parametrize(
    ("name", "bad"),
    [(c[0], c[3]) for c in CASES if c[3] is not None],
    ids=[f"{c[0]}={c[3]}" for c in CASES if c[3]],
)
def test_a_bad_value_is_one_line_naming_the_variable_value_and_form(
    monkeypatch: pytest.MonkeyPatch, name: str, bad: str
) -> None:
    monkeypatch.setenv(name, bad)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert len(caught.value.lines) == 1
    line = caught.value.lines[0]
    assert line.startswith(f"{name}=")
    if name not in ("FLOWER_BASIC_AUTH", "REDIS_URL", "OUTBOX_DATABASE_URL"):  # may hold secrets
        assert repr(bad) in line
    assert "expected" in line


def test_backoff_may_not_exceed_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNQ_RETRY_BACKOFF", "2h")
    monkeypatch.setenv("ASYNQ_RETRY_BACKOFF_MAX", "1h")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.lines == [
        "ASYNQ_RETRY_BACKOFF='2h' must not exceed ASYNQ_RETRY_BACKOFF_MAX='1h'"
    ]


def test_production_requires_redis_url_token_and_flower_auth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.lines == [
        "REDIS_URL is required when APP_ENV=production (no default broker)",
        "API_TOKEN is required when APP_ENV=production",
        "FLOWER_BASIC_AUTH is required when APP_ENV=production",
    ]


def test_production_refuses_placeholder_secrets_and_forces_json_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("API_TOKEN", "changeme")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:password")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [line.split("=")[0] for line in caught.value.lines] == ["API_TOKEN", "FLOWER_BASIC_AUTH"]
    assert "changeme" not in str(caught.value) and "password'" not in str(caught.value)

    monkeypatch.setenv("API_TOKEN", "9f2c1d7e5b3a4c6d8e0f")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:n0t-a-placeholder")
    monkeypatch.setenv("LOG_FORMAT", "text")
    assert load_settings().log_format == "json"


def test_environment_defaults_follow_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL")
    monkeypatch.delenv("LOG_FORMAT")
    monkeypatch.setenv("APP_ENV", "development")
    dev = load_settings()
    assert (dev.log_level, dev.log_format) == ("debug", "text")
    monkeypatch.setenv("APP_ENV", "test")
    other = load_settings()
    assert (other.log_level, other.log_format) == ("info", "json")


def test_an_unknown_asynq_variable_warns_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ASYNQ_CONCURENCY", "3")
    with caplog.at_level(logging.WARNING, logger="worker_app.config"):
        load_settings()
    warnings = [r.getMessage() for r in caplog.records if "ASYNQ_CONCURENCY" in r.getMessage()]
    assert warnings == [
        "unknown setting ASYNQ_CONCURENCY is ignored; did you mean ASYNQ_CONCURRENCY?"
    ]


def test_public_view_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://user:s3cret@cache:6379/0")
    monkeypatch.setenv("API_TOKEN", "tok-s3cret-value")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:s3cret")
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://app:s3cret@db/app")
    shown = load_settings().public()
    assert "s3cret" not in repr(shown)
    assert shown["REDIS_URL"] == "redis://user:***@cache:6379/0"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300ms", 0.3), ("1h30m", 5400), ("2d", 172800), ("45", 45), ("1.5s", 1.5), ("1m30s", 90)],
)
def test_durations_take_go_forms_and_bare_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "1x", "1h 30m", "s1", "-1s", "1.2.3s"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_print_in_their_shortest_form() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(milliseconds=250)) == "250ms"


def test_a_sentinel_url_with_ssl_asks_for_tls_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker_app.celery import celery_config

    url = "sentinel://s1:26379;sentinel://s2:26379/0?master_name=main&ssl=true&ssl_cert_reqs=none"
    assert sentinel_tls(url) == {"ssl": True, "ssl_cert_reqs": "none"}
    assert sentinel_tls(url.split("&")[0]) == {}
    monkeypatch.setenv("REDIS_URL", url)
    config = celery_config(get_settings())
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": "none"}
    assert config["broker_transport_options"]["sentinel_kwargs"]["ssl"] is True
    assert config["redbeat_redis_options"]["sentinel_kwargs"]["ssl"] is True
    # kombu's failover would swap the transport for its own: it stays on the sentinels.
    strategy = config["broker_failover_strategy"]
    alternates = ["sentinel://s1:26379", "sentinel://s2:26379/0"]
    assert [next(iter_) for iter_ in [strategy(alternates)] * 3] == ["s1", "s1", "s1"]


@pytest.mark.parametrize(
    ("url", "variable", "expected"),
    [
        ("redis://localhost:6379/0", None, 0),
        ("sentinel://s1:26379;sentinel://s2:26379/0?master_name=main", None, 1),
        ("sentinel://s1:26379/0?master_name=main", "0", 0),
        ("redis://localhost:6379/0", "2", 2),
    ],
)
def test_a_publish_waits_for_one_replica_with_sentinel_unless_told(
    url: str, variable: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    if variable is None:
        monkeypatch.delenv("ASYNQ_PUBLISH_REPLICAS", raising=False)
    else:
        monkeypatch.setenv("ASYNQ_PUBLISH_REPLICAS", variable)
    assert replicas_to_wait(get_settings()) == expected

"""Settings: every variable of the product, read from the environment and ``.env``, checked once.

A bad value becomes a :class:`ConfigError` whose lines each name the variable, the value given
(secrets masked) and the form expected; entry points print those lines and exit non-zero before
anything connects to Redis.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from dotenv import dotenv_values
from pydantic import (
    BeforeValidator,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker_app.durations import DURATION_FORM, format_duration, parse_duration

logger = logging.getLogger(__name__)

QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
LEVELS = ("debug", "info", "warning", "error", "critical")
# Values that are obviously copied from an example file; refused as production secrets.
SAMPLE_SECRETS = {"changeme", "change-me", "changethis", "secret", "password", "admin", "token"}
MIN_PRODUCTION_TOKEN = 16


class ConfigError(Exception):
    """The configuration is invalid; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        value = parse_duration(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if isinstance(value, timedelta) and value <= timedelta(0):
        raise ValueError("must be greater than 0")
    return value


def parse_queues(value: Any) -> Any:
    """Parse ``critical:6,default:3,low:1`` into an ordered ``{name: weight}``."""
    if not isinstance(value, str):
        return value
    queues: dict[str, int] = {}
    for item in value.split(","):
        name, sep, weight = item.strip().partition(":")
        if not sep or not QUEUE_NAME.fullmatch(name):
            raise ValueError(f"bad entry {item.strip()!r}")
        if not weight.isdigit() or int(weight) < 1:
            raise ValueError(f"weight of {name!r} is not a positive integer")
        if name in queues:
            raise ValueError(f"queue {name!r} is listed twice")
        queues[name] = int(weight)
    return queues


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Queues = Annotated[dict[str, int], NoDecode, BeforeValidator(parse_queues)]

# The form each variable expects, quoted in error lines.
FORMS: dict[str, str] = {
    "REDIS_URL": "redis://[:password@]host[:port][/db], rediss://... or "
    "sentinel://host:port[;sentinel://host:port...][/db]?master_name=NAME"
    "[&ssl=true[&ssl_ca_certs=PATH][&ssl_cert_reqs=required|optional|none]]",
    "APP_ENV": "one of development, test, production",
    "LOG_LEVEL": "one of " + ", ".join(LEVELS),
    "LOG_FORMAT": "text or json",
    "ASYNQ_CONCURRENCY": "a positive integer",
    "ASYNQ_QUEUES": "name:weight[,name:weight...] with unique names of letters, digits, '_', "
    "'.', '-' and positive integer weights, e.g. critical:6,default:3,low:1",
    "ASYNQ_STRICT_PRIORITY": "true or false",
    "ASYNQ_MAX_RETRY": "a non-negative integer",
    "ASYNQ_DLQ_MAX_SIZE": "a positive integer",
    "ASYNQ_MAX_PAYLOAD": "a size of at least 1KiB, such as 1MiB, 512KiB or a number of bytes",
    "ASYNQ_PUBLISH_REPLICAS": "a number of replicas, 0 or more",
    "API_TOKEN": "a non-empty token (at least 16 characters in production, not a sample value)",
    "FLOWER_BASIC_AUTH": "user:password (not a sample value in production)",
    "FLOWER_PORT": "a port number between 1 and 65535",
    "FLOWER_URL": "an http:// or https:// URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "an http:// or https:// URL",
    "OTEL_TRACES_EXPORTER": "a comma-separated list of otlp, console, none",
    "OTEL_SERVICE_NAME": "a non-empty service name",
    "OUTBOX_DATABASE_URL": "postgresql://user[:password]@host[:port]/database",
    "OUTBOX_TABLE": "a table name, optionally schema-qualified (schema.table)",
}
SECRET_VARIABLES = {"API_TOKEN", "FLOWER_BASIC_AUTH"}


class Settings(BaseSettings):
    """Every variable of the README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        validate_default=True,
    )

    redis_url: str = "redis://localhost:6379/0"
    app_env: Literal["development", "test", "production"] = "development"
    log_level: str | None = None
    log_format: Literal["text", "json"] | None = None
    concurrency: int = Field(5, gt=0, validation_alias="ASYNQ_CONCURRENCY")
    queues: Queues = Field(
        default_factory=lambda: {"critical": 6, "default": 3, "low": 1},
        validation_alias="ASYNQ_QUEUES",
    )
    strict_priority: bool = Field(False, validation_alias="ASYNQ_STRICT_PRIORITY")
    max_retry: int = Field(3, ge=0, validation_alias="ASYNQ_MAX_RETRY")
    retry_backoff: Duration = Field(timedelta(seconds=15), validation_alias="ASYNQ_RETRY_BACKOFF")
    retry_backoff_max: Duration = Field(
        timedelta(hours=1), validation_alias="ASYNQ_RETRY_BACKOFF_MAX"
    )
    task_timeout: Duration = Field(timedelta(minutes=5), validation_alias="ASYNQ_TASK_TIMEOUT")
    shutdown_timeout: Duration = Field(
        timedelta(seconds=25), validation_alias="ASYNQ_SHUTDOWN_TIMEOUT"
    )
    visibility_timeout: Duration = Field(
        timedelta(seconds=60), validation_alias="ASYNQ_VISIBILITY_TIMEOUT"
    )
    retention: Duration = Field(timedelta(hours=24), validation_alias="ASYNQ_RETENTION")
    dlq_retention: Duration = Field(timedelta(days=90), validation_alias="ASYNQ_DLQ_RETENTION")
    dlq_max_size: int = Field(10_000, gt=0, validation_alias="ASYNQ_DLQ_MAX_SIZE")
    max_payload: ByteSize = Field(
        ByteSize(1024 * 1024), ge=1024, validation_alias="ASYNQ_MAX_PAYLOAD"
    )
    #: Replicas that must have a job before its publish returns (Redis ``WAIT``, at most
    #: ``keys.REPLICA_WAIT_MS``); None: 1 with Sentinel, else 0.
    publish_replicas: int | None = Field(None, ge=0, validation_alias="ASYNQ_PUBLISH_REPLICAS")
    health_check_interval: Duration = Field(
        timedelta(seconds=15), validation_alias="ASYNQ_HEALTH_CHECK_INTERVAL"
    )
    stats_interval: Duration = Field(timedelta(seconds=60), validation_alias="ASYNQ_STATS_INTERVAL")
    api_token: SecretStr | None = None
    flower_basic_auth: SecretStr | None = None
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_url: str | None = Field(None, pattern=r"^https?://\S+$")
    otel_exporter_otlp_endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    otel_traces_exporter: str | None = Field(
        None, pattern=r"^(otlp|console|none)(,(otlp|console|none))*$"
    )
    otel_service_name: str = Field("worker_app", min_length=1)
    outbox_database_url: SecretStr | None = None
    outbox_table: str = Field("worker_app_outbox", pattern=rf"^{TABLE_NAME.pattern}$")

    @model_validator(mode="before")
    @classmethod
    def _lowercase_choices(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("app_env", "log_level", "log_format"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].strip().lower()
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems = [*self._field_problems(), *self._production_problems()]
        if problems:
            raise ValueError("\n".join(problems))
        if self.log_level is None:
            self.log_level = "debug" if self.app_env == "development" else "info"
        if self.log_format is None or self.app_env == "production":
            self.log_format = "text" if self.app_env == "development" else "json"
        return self

    def _field_problems(self) -> list[str]:
        problems = []
        url_problem = redis_url_problem(self.redis_url)
        if url_problem:
            problems.append(_line("REDIS_URL", mask_url(self.redis_url), url_problem))
        if self.log_level is not None and self.log_level not in LEVELS:
            problems.append(_line("LOG_LEVEL", self.log_level, None))
        if self.retry_backoff > self.retry_backoff_max:
            problems.append(
                f"ASYNQ_RETRY_BACKOFF={format_duration(self.retry_backoff)!r} must not "
                f"exceed ASYNQ_RETRY_BACKOFF_MAX={format_duration(self.retry_backoff_max)!r}"
            )
        if self.flower_basic_auth is not None:
            user, _, password = self.flower_basic_auth.get_secret_value().partition(":")
            if not user or not password:
                problems.append(_line("FLOWER_BASIC_AUTH", "***", None))
        if self.outbox_database_url is not None:
            scheme = urlsplit(self.outbox_database_url.get_secret_value()).scheme
            if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
                shown = mask_url(self.outbox_database_url.get_secret_value())
                problems.append(_line("OUTBOX_DATABASE_URL", shown, None))
        return problems

    def _production_problems(self) -> list[str]:
        if self.app_env != "production":
            return []
        problems = []
        if "redis_url" not in self.model_fields_set:
            problems.append("REDIS_URL is required when APP_ENV=production (no default broker)")
        token = self.api_token.get_secret_value() if self.api_token else ""
        if not token:
            problems.append("API_TOKEN is required when APP_ENV=production")
        elif len(token) < MIN_PRODUCTION_TOKEN or token.lower() in SAMPLE_SECRETS:
            problems.append(_line("API_TOKEN", "***", "too short or a sample value"))
        auth = self.flower_basic_auth.get_secret_value() if self.flower_basic_auth else ""
        if not auth:
            problems.append("FLOWER_BASIC_AUTH is required when APP_ENV=production")
        elif auth.partition(":")[2].lower() in SAMPLE_SECRETS:
            problems.append(_line("FLOWER_BASIC_AUTH", "***", "the password is a sample value"))
        return problems

    @property
    def queue_names(self) -> list[str]:
        """Configured queue names, in configuration order."""
        return list(self.queues)

    @property
    def default_queue(self) -> str:
        """The queue tasks go to unless routed: ``default`` when configured, else the first."""
        return "default" if "default" in self.queues else self.queue_names[0]

    def public(self) -> dict[str, str | int | bool | None | dict[str, int]]:
        """Effective settings by variable name, secrets masked: safe to print or log."""
        out: dict[str, str | int | bool | None | dict[str, int]] = {}
        for name, value in self.__dict__.items():
            shown: str | int | bool | None | dict[str, int]
            if isinstance(value, SecretStr):
                shown = "***"
                if name == "outbox_database_url":
                    shown = mask_url(value.get_secret_value())
            elif isinstance(value, timedelta):
                shown = format_duration(value)
            elif name == "redis_url":
                shown = mask_url(value)
            else:
                shown = value
            out[variable_of(name)] = shown
        return out


def replicas_to_wait(settings: Settings) -> int:
    """Replicas a publish waits for: ``ASYNQ_PUBLISH_REPLICAS``, by default 1 when
    ``REDIS_URL`` is a Sentinel URL (a failover promotes a replica) and 0 otherwise."""
    if settings.publish_replicas is not None:
        return settings.publish_replicas
    return 1 if settings.redis_url.startswith("sentinel://") else 0


def redis_url_problem(url: str) -> str | None:
    """Return why ``url`` is not a usable Redis URL, or None when it is."""
    schemes = {urlsplit(part.strip()).scheme for part in url.split(";")}
    if ";" in url and schemes != {"sentinel"}:
        return "only sentinel:// URLs can be listed with ';' (one per Sentinel)"
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme not in ("redis", "rediss", "sentinel"):
            return f"unsupported scheme {parts.scheme or '(none)'!r}"
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return "bad port"
        if not parts.hostname:
            return "no host"
        db = parts.path.strip("/")
        if db and not db.isdigit():
            return f"database {db!r} is not a number"
    if url.startswith("sentinel://"):
        if not sentinel_master(url):
            return "sentinel URLs need ?master_name=NAME"
        return _sentinel_tls_problem(url)
    return None


#: The values ``ssl_cert_reqs`` takes in a sentinel URL (redis-py's names).
CERT_REQS = ("required", "optional", "none")


def _sentinel_query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url.split(";")[-1]).query).items()}


def _sentinel_tls_problem(url: str) -> str | None:
    query = _sentinel_query(url)
    if query.get("ssl", "false").lower() not in ("true", "false"):
        return "ssl= takes true or false"
    if query.get("ssl_cert_reqs", "required") not in CERT_REQS:
        return f"ssl_cert_reqs= takes one of {', '.join(CERT_REQS)}"
    ca_certs = query.get("ssl_ca_certs")
    if ca_certs is not None and not Path(ca_certs).is_file():
        return f"ssl_ca_certs={ca_certs}: no such file"
    return None


def sentinel_tls(url: str) -> dict[str, Any]:
    """redis-py's TLS arguments a sentinel URL asks for with ``ssl=true`` (for the Sentinels
    and the master alike; the certificate verified unless ``ssl_cert_reqs`` says otherwise,
    against ``ssl_ca_certs`` or the system's authorities); empty without it."""
    if not url.startswith("sentinel://"):
        return {}
    query = _sentinel_query(url)
    if query.get("ssl", "false").lower() != "true":
        return {}
    tls: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": query.get("ssl_cert_reqs", "required")}
    if "ssl_ca_certs" in query:
        tls["ssl_ca_certs"] = query["ssl_ca_certs"]
    return tls


def sentinel_master(url: str) -> str | None:
    """The ``master_name`` query parameter of a sentinel URL."""
    names = parse_qs(urlsplit(url.split(";")[-1]).query).get("master_name")
    return names[0] if names else None


def mask_url(url: str) -> str:
    """Replace the password of every URL in ``url`` with ``***``."""
    return re.sub(r"(://[^:/@;]*:)[^@/;]*@", r"\1***@", url)


def _line(variable: str, value: object, detail: str | None) -> str:
    line = f"{variable}={str(value)!r}: expected {FORMS.get(variable, DURATION_FORM)}"
    return line + (f" ({detail})" if detail else "")


def variable_of(name: str) -> str:
    """The environment variable of a Settings field (or of an alias pydantic reports)."""
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    return alias if isinstance(alias, str) else name.upper()


def _error_lines(error: ValidationError, raw: dict[str, str]) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        loc = item.get("loc") or ()
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        if not loc:
            lines.extend(message.splitlines())
            continue
        variable = variable_of(str(loc[0]))
        shown = "***" if variable in SECRET_VARIABLES else raw.get(variable, item.get("input"))
        if variable == "REDIS_URL" and isinstance(shown, str):
            shown = mask_url(shown)
        # Parsers explain what exactly is wrong; pydantic's own messages only restate the form.
        explains = variable in ("ASYNQ_QUEUES", "REDIS_URL") or "greater than 0" in message
        detail = message if explains else None
        lines.append(_line(variable, shown, detail))
    return lines


def _raw_environment() -> dict[str, str]:
    values = {k.upper(): v for k, v in dotenv_values(".env").items() if v is not None}
    values.update({k.upper(): v for k, v in os.environ.items()})
    return values


def warn_unknown(raw: dict[str, str]) -> None:
    """Log one warning per unknown ``ASYNQ_*`` variable, naming the closest known one."""
    known = [name for name in map(variable_of, Settings.model_fields) if name.startswith("ASYNQ_")]
    for name in sorted(raw):
        if name.startswith("ASYNQ_") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            logger.warning("unknown setting %s is ignored%s", name, hint)


def load_settings() -> Settings:
    """Read and check the settings.

    Raises:
        ConfigError: one or more variables are invalid.
    """
    raw = _raw_environment()
    warn_unknown(raw)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_error_lines(exc, raw)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (``get_settings.cache_clear()`` re-reads them)."""
    return load_settings()

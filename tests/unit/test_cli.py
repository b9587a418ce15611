"""``worker-app dev`` finds a Redis: a private one when none is configured or reachable."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis


def test_dev_starts_a_private_redis_when_none_is_configured_or_reachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker_app.cli.devredis as devredis
    from worker_app.config import get_settings

    default_url = "redis://localhost:6379/0"
    real_answers = devredis.answers
    # Stand-in for "nothing answers at the default URL" on a machine where something does.
    monkeypatch.setattr(devredis, "answers", lambda url: url != default_url and real_answers(url))
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        with devredis.ensure_redis() as url:
            assert url is not None and url != default_url
            client = redis.Redis.from_url(url)
            assert client.ping()
            assert client.config_get("appendonly")["appendonly"] == "yes"
            client.close()
        assert (tmp_path / ".dev" / "redis.log").exists()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    finally:
        get_settings.cache_clear()

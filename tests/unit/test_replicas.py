"""A publish on a Sentinel master is acknowledged only when a replica confirmed it, or when
every sentinel agrees the server is the master and none is failing it over."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker_app.broker import publish
from worker_app.broker.registry import serves_master


class FakeSentinel:
    def __init__(self, port: int, epoch: int, flags: str = "master") -> None:
        self.state = {"ip": "10.0.0.1", "port": port, "config-epoch": epoch, "flags": flags}

    def sentinel_master(self, name: str) -> dict[str, Any]:
        assert name == "main"
        return self.state


class FakePool:
    is_master = True
    service_name = "main"

    def __init__(self, *sentinels: FakeSentinel) -> None:
        self.sentinel_manager = type("Manager", (), {"sentinels": list(sentinels)})()


HERE = ("10.0.0.1", 6379)


def test_a_master_every_sentinel_names_serves() -> None:
    pool = FakePool(FakeSentinel(6379, 0), FakeSentinel(6379, 0))
    assert serves_master(pool, HERE)


def test_a_master_being_failed_over_does_not_serve() -> None:
    pool = FakePool(FakeSentinel(6379, 0), FakeSentinel(6379, 1, "master,failover_in_progress"))
    assert not serves_master(pool, HERE)


def test_the_newest_configuration_decides() -> None:
    # The failover's leader names the new master; the others have not heard yet.
    pool = FakePool(FakeSentinel(6379, 0), FakeSentinel(6380, 1), FakeSentinel(6379, 0))
    assert not serves_master(pool, HERE)
    assert serves_master(pool, ("10.0.0.1", 6380))


def test_no_sentinel_answering_is_no_master() -> None:
    assert not serves_master(FakePool(), HERE)


class FakeClient:
    """Answers ``ROLE`` with a master that has ``replicas`` connected replicas."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.connection_pool = object()  # not Sentinel-managed: always the master

    def execute_command(self, *args: Any) -> Any:
        assert args == ("ROLE",)
        return [b"master", 0, [[b"127.0.0.1", b"1", b"0"]] * self.replicas]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "_replicas", publish._Replicas())


def test_without_sentinel_a_master_without_replicas_takes_publishes() -> None:
    assert publish.replicas_for(FakeClient(0), 1) == 0
    publish.settle_unconfirmed(1, 0, "master", FakeClient(1))  # kept, with a warning


def test_a_demoted_server_refuses() -> None:
    with pytest.raises(RedisConnectionError, match="slave"):
        publish.settle_unconfirmed(1, 0, "slave", FakeClient(1))

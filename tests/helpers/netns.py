"""Worker hosts on a network: one Linux network namespace per host, joined to the machine by a
veth pair on a bridge of their own (``10.231.X.0/24``, X drawn per network), so each worker is a
separate host that reaches Redis over the network and can be cut off from it. Needs root."""

from __future__ import annotations

import random
import subprocess
import uuid


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    """A bridge on the machine (``.1``) and ``hosts`` namespaces (``.11``, ``.12``, ...)."""

    def __init__(self, hosts: int) -> None:
        tag = uuid.uuid4().hex[:5]
        self.subnet = f"10.231.{random.randint(1, 250)}"
        self.bridge = f"wab{tag}"
        self.namespaces = [f"wa{tag}h{n}" for n in range(1, hosts + 1)]
        self.host_ends = [f"wa{tag}v{n}" for n in range(1, hosts + 1)]
        self.started = False

    @property
    def gateway(self) -> str:
        """The machine's address on the network (where Redis listens for the hosts)."""
        return f"{self.subnet}.1"

    def address(self, n: int) -> str:
        return f"{self.subnet}.{11 + n}"

    def start(self) -> None:
        self.started = True
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n, (namespace, host_end) in enumerate(
            zip(self.namespaces, self.host_ends, strict=True)
        ):
            inside = f"{host_end}i"
            _ip("netns", "add", namespace)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(n)}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")

    def prefix(self, n: int) -> list[str]:
        """The command prefix that runs a program on host ``n``."""
        return ["ip", "netns", "exec", self.namespaces[n]]

    def cut(self, n: int) -> None:
        """Host ``n`` loses the network (its cable pulled: the link goes down)."""
        _ip("link", "set", self.host_ends[n], "down")

    def heal(self, n: int) -> None:
        _ip("link", "set", self.host_ends[n], "up")

    def stop(self) -> None:
        if not self.started:
            return
        for namespace, host_end in zip(self.namespaces, self.host_ends, strict=True):
            subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

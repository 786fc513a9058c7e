"""Three hosts for real: network namespaces joined by a bridge, one agent each.

The test builds four namespaces (a bridge and three hosts, each host a veth
pair into the bridge), runs a trivy agent in each host, and removes them
all at the end. Nothing touches this machine's own network. Discovery by
subnet broadcast and by multicast, messages every way, then a cut link: the
agents on the other side notice within the liveness bound.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("A", "B", "C")
SUBNET = "10.77.0"
#: Liveness options of the agents, shortened so the test takes seconds; the
#: bound is the same arithmetic as with the defaults (10 s, 30 s).
LIVENESS = {"heartbeat_interval": 1.0, "dead_host_timeout": 4.0}
#: A cut link is noticed within a silent heartbeat, then dead_host_timeout
#: (the PING stays unacknowledged), plus the kernel's retransmission timer.
DETECTION_BOUND = 2 * LIVENESS["heartbeat_interval"] + LIVENESS["dead_host_timeout"] + 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _can_make_namespaces() -> bool:
    name = f"trivy-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError):
        return False
    _ip("netns", "del", name)
    return True


pytestmark = pytest.mark.skipif(
    not _can_make_namespaces(), reason="cannot create network namespaces (needs root, iproute2)"
)


@pytest.fixture
def hosts() -> Iterator[dict[str, str]]:
    """Namespace of each host name; the bridge between them is a namespace too."""
    suffix = secrets.token_hex(3)
    bridge = f"trivy-br-{suffix}"
    namespaces = {name: f"trivy-{name.lower()}-{suffix}" for name in NAMES}
    created = []
    try:
        _ip("netns", "add", bridge)
        created.append(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for number, (name, namespace) in enumerate(namespaces.items(), 1):
            _ip("netns", "add", namespace)
            created.append(namespace)
            port = f"v{name}"
            veth = ("type", "veth", "peer", "eth0", "netns", namespace)
            _ip("-n", bridge, "link", "add", port, *veth)
            _ip("-n", bridge, "link", "set", port, "master", "br0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "addr", "add", f"{SUBNET}.{number}/24", "brd", "+", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "route", "add", "224.0.0.0/4", "dev", "eth0")
        namespaces["bridge"] = bridge
        yield namespaces
    finally:
        for namespace in reversed(created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


class Agent:
    """A trivy agent in a host namespace (``tests/hosts_agent.py``)."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self._buffer = b""
        self.seen: list[dict[str, Any]] = []

    async def expect(self, event: str, **fields: Any) -> dict[str, Any]:
        """The first report of ``event`` with ``fields`` not handed out yet."""
        while True:
            for record in self.seen:
                if record["event"] == event and all(record.get(k) == v for k, v in fields.items()):
                    self.seen.remove(record)
                    return record
            assert self.process.stdout is not None
            data = await self.process.stdout.receive_some(65536)
            assert data, f"agent {self.name} ended: waiting for {event} {fields}"
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\n")
            self.seen += [json.loads(line) for line in lines]

    async def send(self, text: str) -> int:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")
        return int((await self.expect("sent"))["count"])


async def _start(name: str, namespace: str, bus: str, options: dict[str, Any]) -> Agent:
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.hosts_agent"]
    process = await trio.lowlevel.open_process(
        [*command, name, bus, json.dumps(options)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    agent = Agent(name, process)
    await agent.expect("joined")
    return agent


@pytest.mark.parametrize("kind", ["broadcast", "multicast"])
async def test_three_hosts_find_each_other_talk_and_notice_a_cut_link(
    hosts: dict[str, str], kind: str
) -> None:
    port = 20000 + secrets.randbelow(20000)
    bus = f"{SUBNET}.255:{port}" if kind == "broadcast" else f"224.77.0.1:{port}"
    agents: dict[str, Agent] = {}
    try:
        with trio.fail_after(60):
            for number, name in enumerate(NAMES, 1):
                options: dict[str, Any] = dict(LIVENESS)
                if kind == "multicast":
                    options["multicast_interface"] = f"{SUBNET}.{number}"
                agents[name] = await _start(name, hosts[name], bus, options)
            for name, agent in agents.items():
                for other in NAMES:
                    if other != name:
                        await agent.expect("connected", name=other)
            # messages every way, across hosts
            for name, agent in agents.items():
                assert await agent.send(f"from {name} hello") == 2
            for name, agent in agents.items():
                for other in NAMES:
                    if other != name:
                        await agent.expect("msg", sender=other, text="hello")

            # C's cable is cut: no FIN, no RST reaches anyone
            _ip("-n", hosts["bridge"], "link", "set", "vC", "down")
            cut = trio.current_time()
            assert await agents["A"].send("from A into the void") == 2  # A sends to it, B idles
            for name in ("A", "B"):
                gone = await agents[name].expect("disconnected", name="C")
                assert gone["reason"].startswith("connection lost"), gone
                assert trio.current_time() - cut <= DETECTION_BOUND
            # and A and B still talk
            assert await agents["B"].send("from B still here") == 1
            await agents["A"].expect("msg", sender="B", text="still here")
    finally:
        for agent in agents.values():
            agent.process.kill()
            await agent.process.wait()

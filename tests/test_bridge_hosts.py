"""Two sites for real: each its own network stack, joined only through a broker.

Three network namespaces: two sites and a "wan" where mosquitto runs, each
site linked to the wan by a veth pair of its own. Each site runs an agent
and a bridge on the *same* bus address (127:PORT in its own stack, as two
LANs would use the same port), so nothing but the broker joins them. Then
site two's link is cut and restored: each side sees the other's agent
leave within the stated bound, and come back once the link is up.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from .test_hosts import ROOT, Agent, _can_make_namespaces, _ip, _start

pytestmark = pytest.mark.skipif(
    not _can_make_namespaces(), reason="cannot create network namespaces (needs root, iproute2)"
)

KEEPALIVE = 2
#: The broker drops a silent site after 1.5 keepalives (its will); the
#: site's own bridge notices the silence within two keepalives (paho's
#: PING), then gives the other sites' agents 1.5 keepalives to come back.
GONE_BOUND = 3.5 * KEEPALIVE + 2  # (+ paho runs its keepalive check every second)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Namespaces ``one``, ``two`` and ``wan``; the broker's address from each site."""
    suffix = secrets.token_hex(3)
    namespaces = {name: f"trivy-{name}-{suffix}" for name in ("wan", "one", "two")}
    created = []
    try:
        for namespace in namespaces.values():
            _ip("netns", "add", namespace)
            created.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        for number, site in enumerate(("one", "two"), 1):
            veth = ("type", "veth", "peer", "eth0", "netns", namespaces[site])
            _ip("-n", namespaces["wan"], "link", "add", f"v{site}", *veth)
            _ip("-n", namespaces["wan"], "addr", "add", f"10.79.{number}.254/24", "dev", f"v{site}")
            _ip("-n", namespaces["wan"], "link", "set", f"v{site}", "up")
            _ip("-n", namespaces[site], "addr", "add", f"10.79.{number}.1/24", "dev", "eth0")
            _ip("-n", namespaces[site], "link", "set", "eth0", "up")
        yield namespaces
    finally:
        for namespace in reversed(created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


async def test_two_sites_in_their_own_stacks_through_a_broker_and_a_cut_link(
    network: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "mosquitto.conf"
    config.write_text("listener 1883 0.0.0.0\nallow_anonymous true\nuser root\n")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    bus = f"127:{20000 + secrets.randbelow(20000)}"  # (the same on both sites)
    processes: list[trio.Process] = []

    async def run_in(site: str, *command: str, **options: object) -> trio.Process:
        process = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", network[site], *command], cwd=ROOT, **options
        )
        processes.append(process)
        return process

    try:
        with trio.fail_after(90):
            broker = await run_in("wan", mosquitto, "-c", str(config), stderr=subprocess.PIPE)
            assert broker.stderr is not None
            said = b""
            while b"running" not in said:
                said += await broker.stderr.receive_some(4096)
            agents: dict[str, Agent] = {}
            for number, (site, name) in enumerate((("one", "ALICE"), ("two", "BOB")), 1):
                agents[site] = await _start(name, network[site], bus, {})
                processes.append(agents[site].process)
                await run_in(
                    site, sys.executable, "-m", "trivy", "bridge", "-b", bus, "--site", site,
                    "--broker", f"mqtt://10.79.{number}.254:1883", "--keepalive", str(KEEPALIVE),
                )  # fmt: skip
            await agents["one"].expect("connected", name="BOB")
            await agents["two"].expect("connected", name="ALICE")
            assert await agents["one"].send("from ALICE hello") == 1
            await agents["two"].expect("msg", sender="ALICE", text="hello")

            _ip("-n", network["wan"], "link", "set", "vtwo", "down")  # site two cut off
            cut = trio.current_time()
            await agents["one"].expect("disconnected", name="BOB")
            await agents["two"].expect("disconnected", name="ALICE")
            gone_after = trio.current_time() - cut
            print(f"each site saw the other's agent leave {gone_after:.1f} s after the cut")
            assert gone_after <= GONE_BOUND
            _ip("-n", network["wan"], "link", "set", "vtwo", "up")
            await agents["one"].expect("connected", name="BOB")
            await agents["two"].expect("connected", name="ALICE")
            assert await agents["two"].send("from BOB back") == 1
            await agents["one"].expect("msg", sender="BOB", text="back")
    finally:
        for process in processes:
            process.kill()
            await process.wait()

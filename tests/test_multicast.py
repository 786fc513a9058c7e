"""Multicast discovery, inside a network namespace the test creates.

A multicast datagram sent the ordinary way would leave this machine by its
default route, so the agents run in a fresh network namespace whose only
interface is its own loopback, with multicast enabled on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_udp_port

ROOT = Path(__file__).resolve().parent.parent


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(
    not _namespaces_available(),
    reason="cannot create a network namespace (needs root, unshare, ip)",
)
def test_agents_find_each_other_by_multicast_in_a_private_namespace() -> None:
    bus = f"224.255.255.250:{free_udp_port()}"
    setup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
    command = f'{setup} && exec "{sys.executable}" -m tests.multicast_scenario {bus}'
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "delivered 1 ('hello',)"


@pytest.mark.skipif(
    not _namespaces_available(),
    reason="cannot create a network namespace (needs root, unshare, ip)",
)
def test_allowed_networks_refuse_connections_and_announces_from_elsewhere() -> None:
    setup = (
        "ip link set lo up && ip addr add 10.213.1.1/24 dev lo && ip addr add 10.213.2.1/24 dev lo"
    )
    command = f'{setup} && exec "{sys.executable}" -m tests.allowlist_scenario {free_udp_port()}'
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "other_connection": "",  # closed at once, not even our handshake
        "allowed_connection": "10.213.1.1",
        "connected_to": "10.213.1.1",
        "refusals": [
            "refusing connection from 10.213.2.1: not in allowed_networks",
            "refusing announce from 10.213.2.1: not in allowed_networks",
        ],
    }

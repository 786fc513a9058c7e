"""Shared fixtures: every test gets its own Ivy bus port on loopback.

The project's tests use ``trivy.testing`` like any user's would; ``bus``
is a short name for its ``ivy_bus_address`` fixture.
"""

from __future__ import annotations

import pytest

from trivy.testing import free_bus_address


def free_udp_port() -> int:
    """A UDP port nobody uses now, so that runs never see each other's buses."""
    return int(free_bus_address().rsplit(":", 1)[1])


@pytest.fixture
def port() -> int:
    """A free UDP port for a test's own bus (the compat tests' bus strings)."""
    return free_udp_port()


@pytest.fixture
def bus(ivy_bus_address: str) -> str:
    """A private loopback bus string, ``127.255.255.255:<free port>``."""
    return ivy_bus_address


def open_descriptors() -> int:
    """How many descriptors this process has open, once garbage is collected.

    Sockets an earlier test dropped are closed when collected; counting before
    a collection would let one close in the middle of a test's count.
    """
    import gc
    import os

    gc.collect()
    return len(os.listdir("/proc/self/fd"))

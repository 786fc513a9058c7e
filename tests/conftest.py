"""Shared fixtures: every test gets its own Ivy bus port on loopback."""

from __future__ import annotations

import socket

import pytest


def free_udp_port() -> int:
    """A UDP port nobody uses now, so that runs never see each other's buses."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def bus() -> str:
    """A private loopback bus string, ``127.255.255.255:<free port>``."""
    return f"127.255.255.255:{free_udp_port()}"

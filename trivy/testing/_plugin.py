"""The pytest plugin of :mod:`trivy.testing` (a ``pytest11`` entry point).

Its fixtures do nothing unless a test asks for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .._bus import IvyBus
from .._open import open_ivy_bus
from ._helpers import free_bus_address


@pytest.fixture
def ivy_bus_address() -> str:
    """A private loopback bus for this test: ``"127.255.255.255:<free port>"``."""
    return free_bus_address()


@pytest.fixture
async def ivy_bus(ivy_bus_address: str) -> AsyncIterator[IvyBus]:
    """An agent named ``"test-agent"``, open on :func:`ivy_bus_address` (trio tests)."""
    async with open_ivy_bus("test-agent", ivy_bus_address) as bus:
        yield bus

"""The pytest plugin of :mod:`trivy.testing` (a ``pytest11`` entry point).

Its fixtures do nothing unless a test asks for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .._bus import IvyBus
from .._open import open_ivy_bus
from ._helpers import free_bus_address

#: What to say when a test asks for the agent fixture outside pytest-trio.
NEEDS_TRIO = (
    "trivy's ivy_bus fixture runs under pytest-trio: add `trio_mode = true` to your "
    "pytest configuration ([tool.pytest.ini_options] in pyproject.toml, or [pytest] "
    "in pytest.ini), or mark the test @pytest.mark.trio"
)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that asks for ``ivy_bus`` outside pytest-trio fails with what to add."""
    if "ivy_bus" in getattr(item, "fixturenames", ()) and item.get_closest_marker("trio") is None:
        pytest.fail(NEEDS_TRIO, pytrace=False)


@pytest.fixture
def ivy_bus_address() -> str:
    """A private loopback bus for this test: ``"127.255.255.255:<free port>"``."""
    return free_bus_address()


@pytest.fixture
async def ivy_bus(ivy_bus_address: str) -> AsyncIterator[IvyBus]:
    """An agent named ``"test-agent"``, open on :func:`ivy_bus_address` (trio tests)."""
    async with open_ivy_bus("test-agent", ivy_bus_address) as bus:
        yield bus

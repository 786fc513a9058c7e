"""trivy.testing as a user meets it: the plugin, a background bus, a user's own test run."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import trivy
from trivy.testing import free_bus_address, serve_bus, wait_for_subscription

BUTTON_AGENT = Path(__file__).resolve().parent.parent / "examples" / "button_agent"


def test_free_bus_addresses_are_private_and_distinct() -> None:
    first, second = free_bus_address(), free_bus_address()
    assert first.startswith("127.255.255.255:") and second.startswith("127.255.255.255:")
    assert trivy.BusOptions(agent_name="A", bus=first).bus.networks == ("127.255.255.255",)


async def test_the_plugin_fixtures_give_an_open_bus_on_a_private_address(
    ivy_bus_address: str, ivy_bus: trivy.IvyBus
) -> None:
    assert ivy_bus.running and ivy_bus.agent_name == "test-agent"
    assert ivy_bus.bus_address == trivy.BusOptions(agent_name="x", bus=ivy_bus_address).bus


async def test_serve_bus_runs_in_the_background_until_stopped(ivy_bus: trivy.IvyBus) -> None:
    address = f"127.255.255.255:{ivy_bus.bus_address.port}"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            other = await nursery.start(functools.partial(serve_bus, "OTHER", address))
            assert isinstance(other, trivy.IvyBus) and other.running
            sub = other.subscribe("^ping (.*)")
            await wait_for_subscription(ivy_bus, "OTHER", "^ping (.*)")
            assert await ivy_bus.send("ping 1") == 1
            assert (await sub.receive()).groups == ("1",)
            other.stop()  # the task ends, and with it the nursery
        assert not other.running
        assert await ivy_bus.send("ping 2") == 0


@pytest.mark.skipif(not BUTTON_AGENT.is_dir(), reason="runs from a source checkout")
def test_a_users_agent_and_its_own_pytest_trio_test() -> None:
    """The user's journey: an agent and its test, written against trivy.testing only,
    run by pytest in the agent's own directory (the plugin comes from the entry point)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=BUTTON_AGENT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.parametrize(("ini", "outcome"), [("", "1 error"), ("trio_mode = true\n", "1 passed")])
def test_forgetting_trio_mode_says_what_to_add(tmp_path: Path, ini: str, outcome: str) -> None:
    """Without trio_mode, the fixture gave pytest's or the plugin's internals."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    (tmp_path / "test_agent.py").write_text(
        "async def test_agent(ivy_bus):\n    assert ivy_bus.agent_name == 'test-agent'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    if not ini:
        assert "add `trio_mode = true` to your pytest configuration" in result.stdout

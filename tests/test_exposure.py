"""What an agent exposes: a loopback-only agent, the allow-list's options.

The allow-list refusing other networks is shown in a network namespace
(tests/test_multicast.py), where other source addresses exist.
"""

from __future__ import annotations

import ipaddress

import pytest
import trio

import trivy
from trivy import protocol
from trivy.testing import wait_for_subscription


def _host(host: str | None) -> dict[str, str]:
    return {} if host is None else {"host": host}  # None: the default


@pytest.mark.parametrize("loopback_first", [True, False])
async def test_an_agent_of_a_loopback_bus_listens_on_loopback_alone(
    bus: str, loopback_first: bool
) -> None:
    port = protocol.parse_bus(bus).port
    hosts = [None, "0.0.0.0"] if loopback_first else ["0.0.0.0", None]
    with trio.fail_after(10):
        async with (
            trivy.open_ivy_bus("FIRST", bus, **_host(hosts[0])) as first,
            trivy.open_ivy_bus("SECOND", bus, **_host(hosts[1])) as second,
        ):
            local = first if loopback_first else second
            assert local._discovery._listener is not None and local._discovery._udp is not None
            assert local._discovery._listener.getsockname()[0] == "127.0.0.1"
            assert local._discovery._udp.getsockname() == ("127.255.255.255", port)
            # it still finds, and is found by, an agent listening everywhere
            sub = first.subscribe("^(.*)")
            await wait_for_subscription(second, "FIRST", "^(.*)")
            assert await second.send("hello") == 1
            assert (await sub.receive()).groups == ("hello",)


def test_a_loopback_only_agent_needs_a_loopback_bus() -> None:
    with pytest.raises(ValueError, match=r"loopback-only agent .* 127:2010, not"):
        trivy.BusOptions(agent_name="A", bus="10.0.0:2010", host="127.0.0.1")
    with pytest.raises(ValueError, match="loopback-only"):
        trivy.BusOptions(agent_name="A", bus="127,10.0.0:2010", host="127.0.0.1")
    assert trivy.BusOptions(agent_name="A", bus="127:2010", host="127.0.0.1")
    assert trivy.BusOptions(agent_name="A", bus="127,127.0.0.1:2010", host="127.0.0.1")


@pytest.mark.parametrize(
    ("bus", "host"),
    [
        ("127:2010", "127.0.0.1"),  # the default bus: it can only ever be found here
        ("127.0.0.1,127.255.255.255:2010", "127.0.0.1"),
        (None, "127.0.0.1"),
        ("10,127:2010", "0.0.0.0"),
        ("224.5.6.7:2010", "0.0.0.0"),
    ],
)
def test_an_agent_of_a_loopback_bus_listens_on_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch, bus: str | None, host: str
) -> None:
    monkeypatch.delenv("IVYBUS", raising=False)
    options = trivy.BusOptions(agent_name="A", bus=bus)
    assert options.host == host
    assert trivy.BusOptions(agent_name="A", bus=bus, host="0.0.0.0").host == "0.0.0.0"  # wider


def test_a_loopback_only_agent_allows_this_machine_alone() -> None:
    options = trivy.BusOptions(agent_name="A", bus="127,127.0.0.1:2010")
    assert options.allows("127.0.0.1") and options.allows("127.3.2.1")
    assert not options.allows("10.1.2.3")
    assert not trivy.BusOptions(
        agent_name="A", bus="127:2010", allowed_networks="10.0.0.0/8"
    ).allows("10.1.2.3")
    wide = trivy.BusOptions(agent_name="A", bus="127:2010", host="0.0.0.0")
    assert wide.allows("10.1.2.3")


def test_allowed_networks_are_parsed_once() -> None:
    options = trivy.BusOptions(
        agent_name="A", bus="10.1:2010", allowed_networks="10.1.0.0/16, 192.168.3.7"
    )
    assert options.allowed_networks == (
        ipaddress.IPv4Network("10.1.0.0/16"),
        ipaddress.IPv4Network("192.168.3.7/32"),
    )
    assert options.allows("10.1.200.3") and options.allows("192.168.3.7")
    assert not options.allows("10.2.0.1") and not options.allows("192.168.3.8")
    assert options.allows("127.0.0.1")  # this host's own agents
    assert trivy.BusOptions(agent_name="A", bus="10.1:2010").allows("8.8.8.8")  # no list: anyone
    with pytest.raises(ValueError, match="allowed_networks"):
        trivy.BusOptions(agent_name="A", allowed_networks=["10.1.0.0/33"])

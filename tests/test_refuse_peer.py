"""``refuse_peer``: agents of one process that need no connection among them."""

from __future__ import annotations

import logging

import pytest
import trio

import trivy
from trivy.bridge._own import OwnAgents


class _Group:
    """The ports of a group of agents that refuse each other; each look counted."""

    def __init__(self, *, everyone: bool = False) -> None:
        self.everyone = everyone
        self.ports: set[int] = set()
        self.asked: list[int] = []
        self.asked_changed = trio.Event()

    def refuses(self, host: str, port: int) -> bool:
        assert host.startswith("127.")
        self.asked.append(port)
        self.asked_changed.set()
        return self.everyone or port in self.ports

    async def wait_asked(self, *ports: int) -> None:
        """Until one of ``ports`` was asked about."""
        while not set(ports) & set(self.asked):
            self.asked_changed = trio.Event()
            await self.asked_changed.wait()


def _peers_seen(events: trivy.EventStream[trivy.BusEvent]) -> set[str]:
    """The names of the peers the events buffered so far are about."""
    seen = set()
    while True:
        try:
            event = events.receive_nowait()
        except trio.WouldBlock:
            return seen
        if isinstance(event, trivy.PeerConnected | trivy.PeerDisconnected):
            seen.add(event.peer.name)


async def test_agents_that_refuse_each_other_never_connect_and_meet_the_others(bus: str) -> None:
    group = _Group()
    with trio.fail_after(10):
        async with (
            trivy.open_ivy_bus("A", bus, refuse_peer=group.refuses) as a,
            a.events() as events,
        ):
            group.ports.add(a.port)
            async with trivy.open_ivy_bus("B", bus, refuse_peer=group.refuses) as b:
                group.ports.add(b.port)
                # A heard B's announce (and refused it), or B refused A's hello
                await group.wait_asked(a.port, b.port)
                async with trivy.open_ivy_bus("C", bus) as c:
                    # the others still connect with both, both ways
                    await c.wait_for_peer("A")
                    await c.wait_for_peer("B")
                    await a.wait_for_peer("C")
                    await b.wait_for_peer("C")
                    assert {p.name for p in a.peers} == {"C"}
                    assert {p.name for p in b.peers} == {"C"}
                    # A never saw B connect, not even for a moment
                    assert _peers_seen(events) == {"C"}


async def test_a_refused_announce_makes_no_connection(bus: str) -> None:
    refusing, accepting = _Group(everyone=True), _Group()
    with trio.fail_after(10):
        async with (
            trivy.open_ivy_bus("OLD", bus, refuse_peer=refusing.refuses) as old,
            trivy.open_ivy_bus("NEW", bus, refuse_peer=accepting.refuses) as new,
            new.events() as events,
        ):
            await refusing.wait_asked(new.port)  # NEW's announce, ignored
            async with trivy.open_ivy_bus("THIRD", bus):
                await new.wait_for_peer("THIRD")
                # OLD never connected: NEW was never asked about it, never saw it
                assert old.port not in accepting.asked
                assert [p.name for p in new.peers] == ["THIRD"] and not old.peers
                assert _peers_seen(events) == {"THIRD"}


async def test_a_refused_agent_is_told_bye_at_its_hello(bus: str) -> None:
    with trio.fail_after(10):
        async with trivy.open_ivy_bus("OLD", bus) as old, old.events() as events:
            # OLD hears NEW's announce and connects; NEW refuses it once named
            refused: list[tuple[str, int]] = []

            def refuse(host: str, port: int) -> bool:
                refused.append((host, port))
                return port == old.port

            async with trivy.open_ivy_bus("NEW", bus, refuse_peer=refuse) as new:
                while True:
                    event = await events.receive()
                    if isinstance(event, trivy.PeerDisconnected):
                        break
                assert event.peer.name == "NEW"
                assert event.reason == "BYE"
                assert ("127.0.0.1", old.port) in refused
                assert not new.peers and not old.peers


async def test_a_predicate_that_raises_refuses_nobody(
    bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(host: str, port: int) -> bool:
        raise RuntimeError("a bug of the application's")

    caplog.set_level(logging.ERROR, "trivy")
    with trio.fail_after(10):
        async with (
            trivy.open_ivy_bus("A", bus, refuse_peer=broken) as a,
            trivy.open_ivy_bus("B", bus, refuse_peer=broken),
        ):
            await a.wait_for_peer("B")
    failed = [r for r in caplog.records if "refuse_peer(" in r.getMessage()]
    assert failed and "a bug of the application's" in (failed[0].exc_text or "")


def test_the_predicate_must_be_callable() -> None:
    with pytest.raises(TypeError, match="refuse_peer"):
        trivy.BusOptions(agent_name="A", refuse_peer=42)  # type: ignore[arg-type]


def test_the_bridge_tells_its_own_agents_by_port_and_this_machine() -> None:
    """A port number is one agent's on one host only: an agent elsewhere with
    the number of a proxy's port is not one of the bridge's (it was taken
    for one, and never published)."""
    own = OwnAgents()
    own.ports.add(40_000)
    assert own("127.0.0.1", 40_000)
    assert not own("127.0.0.1", 40_001)
    assert not own("192.0.2.7", 40_000)  # (TEST-NET-1: no machine's address)
    assert not own("not an address", 40_000)

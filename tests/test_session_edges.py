"""A peer session's edges: refusals after the fact, our BYE, odd but valid options."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

import trivy
from trivy._matching import RegexpTable
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

TIMEOUT = 10


async def test_a_regexp_the_matcher_refuses_is_refused_and_the_peer_kept(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled by the connection, refused by the table: ERROR, peer kept.

    (It happens with a regexp nested just under the recursion limit once
    ``re``'s cache has dropped it: the table's compile runs deeper.)
    """
    real_add = RegexpTable.add

    def add(
        table: RegexpTable[object],
        subscriber: object,
        sub_id: int,
        regexp: str,
        *,
        may_guard: bool = True,
    ) -> object:
        if regexp == "^boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real_add(table, subscriber, sub_id, regexp, may_guard=may_guard)

    monkeypatch.setattr(RegexpTable, "add", add)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            await raw.handshake("RAW", b"1 0\x02^ok (.*)\n1 1\x02^boom\n")
            error = await raw.line_starting(b"3 ")
            assert error.startswith(b"3 0\x02Error compiling '^boom', maximum recursion")
            peer = await wait_for_subscription(a, "RAW", "^ok (.*)")
            assert dict(peer.subscriptions) == {0: "^ok (.*)"}
            assert await a.send("boom") == 0
            assert await a.send("ok fine") == 1
            assert await raw.line_starting(b"2 ") == b"2 0\x02fine\x03"
            assert a.peers == [peer]
            await raw.aclose()


async def test_nothing_follows_our_bye_and_a_late_handshake_is_ignored(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, ready_message="READY") as a, a.events() as events:
            raw = await RawPeer.connect(a)
            await raw.send(b"6 1234\x02RAW\n1 0\x02^(.*)\n")  # no END_REGEXP yet
            while len(a._peers) != 1 or next(iter(a._peers)).identified_at is None:
                await trio.testing.wait_all_tasks_blocked()
            (session,) = list(a._peers)
            session.say_bye()  # what leaving does to each peer
            assert await raw.line_starting(b"0 ") == b"0 0\x02"
            await raw.send(b"5 0\x02\n9 7\x02\nnonsense\n")  # handshake end, PING, junk
            await raw.stream.send_eof()
            assert await raw.line() == b""  # no ready message, no PONG, no ERROR
            await session.ended.wait()
            assert a.peers == []
            assert await a.send("anything") == 0
            seen = []
            while True:
                try:
                    seen.append(type(events.receive_nowait()))
                except trio.WouldBlock:
                    break
            assert seen == [trivy.SubscriptionAdded]  # never connected nor disconnected
            await raw.aclose()


async def test_zero_buffer_limit_and_stop_timeout_are_valid(bus: str) -> None:
    options = trivy.BusOptions(agent_name="A", bus=bus, send_buffer_limit=0, stop_timeout=0)
    assert (options.send_buffer_limit, options.stop_timeout) == (0, 0)
    with pytest.raises(ValueError, match="send_buffer_limit cannot be negative"):
        trivy.BusOptions(agent_name="A", send_buffer_limit=-1)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^n (.*)")
            async with trivy.open_ivy_bus("B", bus, send_buffer_limit=0) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                for i in range(100):  # each send waits until its MSG is out
                    assert await b.send(f"n {i}") == 1
                got = [(await sub.receive()).groups[0] for _ in range(100)]
                assert got == [str(i) for i in range(100)]


async def test_event_streams_opened_after_the_bus_stopped_end_at_once(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            pass
        for stream in (a.events(), a.direct_messages()):
            assert [event async for event in stream] == []


async def test_a_peer_refused_by_a_regexp_change_loses_the_old_regexp_too(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as events:
            raw = await RawPeer.connect(a)
            await raw.handshake("RAW", b"1 0\x02^old (.*)\n")
            await wait_for_event(events, trivy.PeerConnected)
            await raw.send(b"1 0\x02(unclosed\n")  # replaces id 0, does not compile
            removed = await wait_for_event(events, trivy.SubscriptionRemoved)
            assert (removed.subscription_id, removed.regexp) == (0, "^old (.*)")  # type: ignore[attr-defined]
            assert a.peers[0].subscriptions == {}
            assert await a.send("old text") == 0
            error = await raw.line_starting(b"3 ")
            assert re.match(rb"3 \d+\x02Error compiling '\(unclosed', missing \)", error)
            await raw.aclose()


async def test_the_disconnect_overflow_policy_drops_the_slow_peer_mid_route(bus: str) -> None:
    """Two subscriptions of one peer on one regexp: the first overflows, the route goes on."""
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=100, overflow="disconnect") as a,
            a.events() as events,
        ):
            raw = await RawPeer.connect(a)  # never reads: its output only grows
            await raw.handshake("RAW", b"1 0\x02^n (.*)\n1 1\x02^n (.*)\n")
            await wait_for_event(events, trivy.PeerConnected)
            while len(a.peers[0].subscriptions) < 2:
                await trio.testing.wait_all_tasks_blocked()
            for i in range(200):
                a.send_nowait(f"n {i} " + "x" * 50)
            await wait_for_event(events, trivy.Congestion)
            await wait_for_event(events, trivy.PeerDisconnected)
            assert a.peers == [] and a.running
            await raw.aclose()


async def test_two_agents_flooding_and_pinging_each_other_do_not_deadlock(bus: str) -> None:
    """Two agents flooding each other (10 MB a send) while PINGing: both keep going.

    Reading a peer pauses only when its own lines made us reply past its
    limit; pausing on any reply while over the limit deadlocked two such
    agents (seen with 40 MB sends; this smaller run checks it stays live).
    """
    text = "x" * 500_000  # x 20 bindings: one send queues 10 MB, past kernel buffers
    with trio.fail_after(30):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            trivy.open_ivy_bus("B", bus) as b,
        ):
            for ivy in (a, b):
                for _ in range(20):
                    ivy.bind(lambda peer, body: None, "^(.*)$")
            peer_b = await wait_for_subscription(a, "B", "^(.*)$")
            peer_a = await wait_for_subscription(b, "A", "^(.*)$")

            async def flood(ivy: trivy.IvyBus) -> None:
                for _ in range(10):
                    await ivy.send(text)

            async def ping(ivy: trivy.IvyBus, peer: trivy.Peer, done: trio.Event) -> None:
                while not done.is_set():
                    await ivy.ping(peer)

            done = trio.Event()
            async with trio.open_nursery() as pings:
                pings.start_soon(ping, a, peer_b, done)
                pings.start_soon(ping, b, peer_a, done)
                async with trio.open_nursery() as floods:
                    floods.start_soon(flood, a)
                    floods.start_soon(flood, b)
                done.set()


async def test_our_own_lines_stay_within_what_peers_accept(bus: str) -> None:
    """An own regexp or name over 1 MiB used to crash the bus when a peer came."""
    with pytest.raises(ValueError, match="longer than peers accept"):
        trivy.BusOptions(agent_name="N" * 100_000)
    with pytest.raises(ValueError, match="longer than peers accept"):
        trivy.BusOptions(agent_name="A", ready_message="r" * 100_000)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            with pytest.raises(ValueError, match="peers refuse over"):
                a.subscribe("x" * 20_000)
            assert a.subscriptions == {}  # nothing half-made
            async with trivy.open_ivy_bus("B", bus) as b:
                assert (await b.wait_for_peer("A")).name == "A"


async def test_send_direct_says_which_parameter_has_the_wrong_type(bus: str) -> None:
    """A str id put a malformed line on the wire; a name said 'not connected'."""
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, trivy.open_ivy_bus("B", bus):
            peer = await a.wait_for_peer("B")
            with pytest.raises(TypeError, match="the id must be an int, not str"):
                a.send_direct(peer, "1", "text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="the id must be an int, not float"):
                a.send_direct(peer, 1.5, "text")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="the text must be a str, not float"):
                a.send_direct(peer, 1, 2.5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=r"peer must be a Peer .* not str"):
                a.send_direct("B", 1, "text")  # type: ignore[arg-type]
            a.send_direct(peer, 1, "text")  # and the right types still go


@pytest.mark.parametrize("leaving", [SystemExit(3), KeyboardInterrupt()])
def test_an_exit_right_after_stop_in_the_body_is_not_lost(bus: str, leaving: BaseException) -> None:
    """``bus.stop()`` then ``sys.exit(3)`` in the same step once exited with status 0."""

    async def main() -> None:
        async with trivy.open_ivy_bus("B", bus), trivy.open_ivy_bus("A", bus) as a:
            await a.wait_for_peer("B")
            a.stop()
            raise leaving

    with pytest.raises(type(leaving)) as raised:
        trio.run(main)
    assert raised.value is leaving

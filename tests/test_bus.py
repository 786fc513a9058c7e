"""trivy to trivy: several buses in one trio.run, over real loopback sockets."""

from __future__ import annotations

import itertools
import logging
import socket

import pytest
import trio
import trio.testing

import trivy
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

from .conftest import open_descriptors

TIMEOUT = 10


async def test_two_buses_find_each_other_and_exchange_messages(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe(r"^hello (\w+) (\w+)?")
            async with trivy.open_ivy_bus("B C", bus) as b:  # names may have spaces
                peer_a = await wait_for_subscription(b, "A", sub.regexp)
                peer_b = await a.wait_for_peer("B C")
                assert (peer_a.name, peer_a.port, peer_a.host) == ("A", a.port, "127.0.0.1")
                assert peer_b.port == b.port
                assert peer_a.subscriptions == {sub.id: r"^hello (\w+) (\w+)?"}
                assert a.peers == [peer_b] and b.peers == [peer_a]
                assert b.peer("A") is peer_a and b.peers_named("A") == [peer_a]
                assert b.peer("nobody") is None

                assert await b.send("hello big world") == 1
                assert await b.send("nobody listens") == 0
                assert await b.send("") == 0
                assert await b.send("hello you ") == 1
                first, second = await sub.receive(), await sub.receive()
                assert first == trivy.Match(peer_b, ("big", "world"), sub.id)
                assert second.groups == ("you", "")  # a group that took no part: ""


async def test_one_text_gives_one_msg_per_matching_subscription(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            words, numbers = a.subscribe(r"^(\w+)"), a.subscribe(r"(\d+)$")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", numbers.regexp)
                assert await b.send("abc 42") == 2
                assert (await words.receive()).groups == ("abc",)
                assert (await numbers.receive()).groups == ("42",)


async def test_newline_in_text_is_refused(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        await _send_newline(bus)


async def _send_newline(bus: str) -> None:
    async with trivy.open_ivy_bus("A", bus) as a:
        try:
            await a.send("two\nlines")
        except ValueError as exc:
            assert "newline" in str(exc)
        else:
            raise AssertionError("a text with a newline was accepted")


async def test_java_newline_option_carries_newlines(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, java_newlines=True) as a:
            sub = a.subscribe(r"^text (.*)")
            async with trivy.open_ivy_bus("B", bus, java_newlines=True) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                assert await b.send("text two\nlines") == 1
                assert (await sub.receive()).groups == ("two\nlines",)


async def test_handshake_order_on_the_wire(bus: str) -> None:
    """START_REGEXP first, then ADD_REGEXP in binding order, then END_REGEXP."""
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            me.subscribe("^first")
            me.bind(lambda peer: None, "^second")
            me.subscribe("^third")
            raw = await RawPeer.connect(me)
            lines = [await raw.line() for _ in range(5)]
            assert lines == [
                b"6 %d\x02ME" % me.port,
                b"1 0\x02^first",
                b"1 1\x02^second",
                b"1 2\x02^third",
                b"5 0\x02",
            ]
            await raw.aclose()


async def test_ready_message_goes_to_each_new_peer_through_its_subscriptions(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            ready = a.subscribe(r"^(\w+) READY")
            async with trivy.open_ivy_bus("B", bus, ready_message="B READY"):
                assert (await ready.receive()).groups == ("B",)
                async with trivy.open_ivy_bus("C", bus, ready_message="C READY") as c:
                    assert (await ready.receive()).groups == ("C",)
                    await c.wait_for_peer("B")
                    # B did not subscribe: C's ready message reached A only, once
                    assert len(ready) == 0


async def test_subscriptions_made_first_in_the_body_are_in_every_handshake(bus: str) -> None:
    """No peer is let in before the body of ``open_ivy_bus`` runs.

    A peer already on the bus connects as soon as it hears our announce; if
    it got our handshake before our first subscription, its ready message
    (sent through the subscriptions of the handshake) would be lost.
    """
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("OLD", bus, ready_message="OLD READY"):
            for _ in range(20):
                async with trivy.open_ivy_bus("NEW", bus) as new:
                    ready = new.subscribe("^OLD (READY)")
                    assert (await ready.receive()).groups == ("READY",)


async def test_send_to_one_peer_and_raw_messages(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, trivy.open_ivy_bus("B", bus) as b:
            sub_a = a.subscribe("^x (.*)")
            async with trivy.open_ivy_bus("C", bus) as c:
                sub_c = c.subscribe("^x (.*)")
                await wait_for_subscription(b, "A", sub_a.regexp)
                peer_c = await wait_for_subscription(b, "C", sub_c.regexp)
                assert await b.send("x all") == 2
                assert b.send_nowait("x only C", to=peer_c) == 1
                assert await b.send("x only C again", to=peer_c) == 1
                b.send_raw(peer_c, trivy.protocol.MsgType.MSG, sub_c.id, ["raw"])
                got = [(await sub_c.receive()).groups[0] for _ in range(4)]
                assert got == ["all", "only C", "only C again", "raw"]
                assert (await sub_a.receive()).groups == ("all",)
                assert len(sub_a) == 0


async def test_unsubscribe_and_unbind_reach_the_peers(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            calls: list[tuple[str, ...]] = []
            bound = a.bind(lambda peer, *groups: calls.append(groups), r"^bound (.*)")
            async with trivy.open_ivy_bus("B", bus) as b:
                async with a.subscribe(r"^sub (.*)") as sub:
                    peer_a = await wait_for_subscription(b, "A", sub.regexp)
                    assert await b.send("sub x") == 1
                    async with b.events() as events:
                        await sub.aclose()
                        removed = await wait_for_event(events, trivy.SubscriptionRemoved)
                        assert removed == trivy.SubscriptionRemoved(peer_a, sub.id, r"^sub (.*)")
                        assert a.unbind(bound) == r"^bound (.*)"
                        await wait_for_event(events, trivy.SubscriptionRemoved)
                assert peer_a.subscriptions == {}
                assert await b.send("sub y") == 0
                assert await b.send("bound z") == 0
                assert calls == []
                assert a.subscriptions == {}
                try:
                    a.unbind(bound)
                except KeyError:
                    pass
                else:
                    raise AssertionError("unbinding twice did not raise")


async def test_regexp_replacement_by_id(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe(r"^old (.*)")
            async with trivy.open_ivy_bus("B", bus) as b:
                peer_a = await wait_for_subscription(b, "A", sub.regexp)
                async with b.events() as events:
                    a.change_subscription(sub.id, r"^new (.*)")
                    changed = await wait_for_event(events, trivy.SubscriptionChanged)
                assert changed == trivy.SubscriptionChanged(
                    peer_a, sub.id, r"^new (.*)", r"^old (.*)"
                )
                assert await b.send("old x") == 0
                assert await b.send("new y") == 1
                assert (await sub.receive()).groups == ("y",)
                assert sub.regexp == r"^new (.*)"


async def test_callbacks_sync_and_async_and_failing(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            got: list[object] = []
            done = trio.Event()

            def failing(peer: trivy.Peer, value: str) -> None:
                raise RuntimeError("callback bug")

            def sync_cb(peer: trivy.Peer, value: str) -> None:
                got.append(("sync", peer.name, value))

            async def async_cb(peer: trivy.Peer, value: str) -> None:
                await trio.lowlevel.checkpoint()
                got.append(("async", peer.name, value))
                done.set()

            a.bind(failing, r"^v (.*)")
            a.bind(sync_cb, r"^v (.*)")
            last = a.bind(async_cb, r"^v (.*)")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", a.subscriptions[last])
                assert await b.send("v 1") == 3
                await done.wait()
            assert got == [("sync", "B", "1"), ("async", "B", "1")]


async def test_direct_messages_errors_and_events(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as a_events:
            async with trivy.open_ivy_bus("B", bus) as b, b.direct_messages() as directs:
                connected = await wait_for_event(a_events, trivy.PeerConnected)
                peer_b = connected.peer  # type: ignore[attr-defined]
                a.send_direct(peer_b, 7, "hi there")
                assert await directs.receive() == trivy.DirectMessage(b.peer("A"), 7, "hi there")
                b.send_error(b.peer("A"), 42, "something went wrong")  # type: ignore[arg-type]
                error = await wait_for_event(a_events, trivy.ErrorReceived)
                assert error == trivy.ErrorReceived(peer_b, 42, "something went wrong")
            left = await wait_for_event(a_events, trivy.PeerDisconnected)
            assert left == trivy.PeerDisconnected(peer_b, "BYE")
            assert a.peers == []


async def test_ping_measures_a_round_trip(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, trivy.open_ivy_bus("B", bus) as b:
            peer_b = await a.wait_for_peer("B")
            await b.wait_for_peer("A")
            with trio.fail_after(5):
                round_trips = [await a.ping(peer_b) for _ in range(3)]
            assert all(0 < rtt < 5 for rtt in round_trips)


async def test_die_accepted_stops_the_bus_cleanly(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("KILLER", bus) as killer:
            body_finished = False
            async with trivy.open_ivy_bus("VICTIM", bus) as victim:
                killer.send_die(await killer.wait_for_peer("VICTIM"))
                await trio.sleep_forever()  # cancelled by the DIE
                body_finished = True
            assert not body_finished
            assert not victim.running
            async with killer.events() as events:
                while killer.peers:
                    await wait_for_event(events, trivy.PeerDisconnected)
            try:
                await victim.send("too late")
            except trivy.IvyIllegalStateError:
                pass
            else:
                raise AssertionError("a stopped bus accepted a send")


async def test_die_refused_by_on_die(bus: str) -> None:
    asked: list[tuple[str, int]] = []

    async def refuse(peer: trivy.Peer, num_id: int) -> bool:
        asked.append((peer.name, num_id))
        return False

    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("KILLER", bus) as killer,
            trivy.open_ivy_bus("STUBBORN", bus, on_die=refuse) as stubborn,
        ):
            sub = stubborn.subscribe("^still (.*)")
            async with stubborn.events() as events:
                peer = await wait_for_subscription(killer, "STUBBORN", sub.regexp)
                killer.send_die(peer, 5)
                die = await wait_for_event(events, trivy.DieReceived)
            assert die.refused and asked == [("KILLER", 5)]  # type: ignore[attr-defined]
            assert await killer.send("still alive") == 1
            assert (await sub.receive()).groups == ("alive",)
            assert stubborn.running


async def test_stop_during_traffic_leaves_no_task_or_socket(bus: str) -> None:
    fds_before = open_descriptors()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^data (.*)")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", sub.regexp)

                async def flood() -> None:
                    i = 0
                    while True:
                        await b.send(f"data {i}")
                        i += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    for _ in range(500):
                        await sub.receive()
                    a.stop()  # stop A in the middle of the flood
                    await trio.sleep_forever()
            # A's block exited; B saw A leave and keeps no link to it
    assert open_descriptors() == fds_before
    assert not a.running and not b.running


async def test_leaving_delivers_everything_to_a_slow_but_live_peer(bus: str) -> None:
    """What ``send`` accepted still arrives after the sender left, BYE last.

    The sender queues megabytes for a raw peer, far more than the kernel's
    buffers hold, then leaves; the peer starts reading only then, slowly.
    The sender's block must not exit before the last byte is out.
    """
    count, padding = 8000, "x" * 1000
    numbers: list[int] = []
    lines: list[bytes] = []

    async def read_slowly(raw: RawPeer) -> None:
        while True:
            line = await raw.line()
            if line.startswith(b"2 0\x02"):
                number, rest = line.split(b"\x02")[1].split(b"\x03", 1)
                assert rest == padding.encode() + b"\x03"
                numbers.append(int(number))
                if len(numbers) % 64 == 0:
                    await trio.sleep(0.001)
            elif line == b"0 0\x02" or not line:
                lines.append(line)
                return

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async with trivy.open_ivy_bus(
                "FAST", bus, stop_timeout=0.5, send_buffer_limit=64 * 1024 * 1024
            ) as fast:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", fast.port))
                raw = RawPeer(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
                # the padding is captured too: each MSG carries a kilobyte
                await raw.handshake("SLOW", b"1 0\x02^n (\\d+) (x*)\n")
                slow = await wait_for_subscription(fast, "SLOW", r"^n (\d+) (x*)")
                session = fast._peers.session_of(slow)
                for i in range(count):
                    await fast.send(f"n {i} {padding}")
                assert session.output.size > 4 * 1024 * 1024  # megabytes still queued
                nursery.start_soon(read_slowly, raw)  # from now on, FAST is leaving
            assert session.ended.is_set()  # FAST left once everything was out
        await raw.aclose()
    assert numbers == list(range(count))
    assert lines == [b"0 0\x02"]  # BYE after the last message
    assert session.output.write_stalls > 0  # the writer did wait for the kernel


async def test_consumer_blocked_on_empty_subscription_is_cancellable(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        await _blocked_consumer(bus)


async def _blocked_consumer(bus: str) -> None:
    async with trivy.open_ivy_bus("A", bus) as a:
        sub = a.subscribe("^never")
        with trio.move_on_after(0.01) as scope:
            await sub.receive()
        assert scope.cancelled_caught


async def test_subscription_ends_when_the_bus_stops(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
        received = [m async for m in sub]
    assert received == []
    try:
        sub.receive_nowait()
    except trio.EndOfChannel:
        pass
    else:
        raise AssertionError("a subscription of a stopped bus did not end")


async def test_backpressure_loses_nothing(bus: str) -> None:
    """A slow consumer with a tiny buffer still gets every message, in order."""
    count = 3000
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe(r"^n (\d+)", max_buffer=4)
            async with trivy.open_ivy_bus("B", bus, send_buffer_limit=1024) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                async with trio.open_nursery() as nursery:

                    async def produce() -> None:
                        for i in range(count):
                            assert await b.send(f"n {i}") == 1

                    nursery.start_soon(produce)
                    got = []
                    while len(got) < count:
                        batch = await sub.receive_batch()
                        got.extend(int(m.groups[0]) for m in batch)
                        assert len(batch) <= 4
                assert got == list(range(count))


async def test_send_nowait_drops_and_reports_congestion(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe(r"^n (\d+)")
            async with trivy.open_ivy_bus("B", bus, send_buffer_limit=100) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                async with b.events() as events:
                    sent = sum(b.send_nowait(f"n {i}") for i in range(100))
                    congestion = await wait_for_event(events, trivy.Congestion)
                assert 0 < sent < 100
                assert congestion.dropped > 0  # type: ignore[attr-defined]
                received = [int((await sub.receive()).groups[0]) for _ in range(sent)]
                assert received == list(range(sent))  # what was queued arrives in order


async def test_wait_for_peer_times_out(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        await _wait_for_ghost(bus)


async def _wait_for_ghost(bus: str) -> None:
    async with trivy.open_ivy_bus("A", bus) as a:
        try:
            with trio.fail_after(0.05):
                await a.wait_for_peer("ghost")
        except trio.TooSlowError:
            pass
        else:
            raise AssertionError("waited for a peer that never came")


async def _run_until(
    name: str, bus: str, buses: list[trivy.IvyBus], ready: trio.Semaphore, stop: trio.Event
) -> None:
    async with trivy.open_ivy_bus(name, bus) as ivy:
        buses.append(ivy)
        ivy.subscribe(f"^to {name} (.*)")
        ready.release()
        await stop.wait()


async def test_a_second_connection_to_a_peer_is_resolved_like_ivy_c(
    bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two connections between A and B: both sides close the same one.

    The second connection is made by hand, as discovery would when two
    agents announce themselves at the same moment, so the resolution runs
    every time rather than when a race happens to occur.
    """
    caplog.set_level(logging.INFO, logger="trivy")
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, trivy.open_ivy_bus("B", bus) as b:
            sub = a.subscribe("^to A (.*)")
            await wait_for_subscription(b, "A", sub.regexp)
            await a.wait_for_peer("B")
            with socket.create_connection(("127.0.0.1", b.port)) as sock:
                assert a._nursery is not None
                a._nursery.start_soon(a._serve, sock.dup(), "127.0.0.1", None, b.port)

            def resolutions() -> int:
                return sum("duplicate connection" in r.getMessage() for r in caplog.records)

            # until each side resolved it and closed the loser
            while resolutions() < 2 or len(a._peers) != 1 or len(b._peers) != 1:
                await trio.testing.wait_all_tasks_blocked(0.01)
            await trio.testing.wait_all_tasks_blocked(0.01)
            assert resolutions() == 2  # once on each side
            (a_end,), (b_end,) = list(a._peers), list(b._peers)
            # the same connection survived on both sides
            assert (a_end.local_address, a_end.remote_address) == (
                b_end.remote_address,
                b_end.local_address,
            )
            assert a.peers and b.peers
            peer_a = await wait_for_subscription(b, "A", sub.regexp)
            assert await b.send("to A once", to=peer_a) == 1
            assert (await sub.receive()).groups == ("once",)


async def test_buses_started_at_once_keep_one_link_per_pair(bus: str) -> None:
    """Buses started at once may connect to each other twice: one link stays."""
    for _ in range(5):
        with trio.fail_after(TIMEOUT):
            buses: list[trivy.IvyBus] = []
            stop, ready = trio.Event(), trio.Semaphore(0)
            async with trio.open_nursery() as nursery:
                for name in ("P", "Q", "R"):
                    nursery.start_soon(_run_until, name, bus, buses, ready, stop)
                for _ in range(3):
                    await ready.acquire()
                pairs = [(ivy, other) for ivy in buses for other in buses if other is not ivy]
                for ivy, other in pairs:
                    await wait_for_subscription(
                        ivy, other.agent_name, f"^to {other.agent_name} (.*)"
                    )
                # a PING both ways on each pair: any duplicate is resolved by then
                for ivy, other in pairs:
                    await ivy.ping(ivy.peer(other.agent_name))  # type: ignore[arg-type]
                for ivy in buses:
                    others = sorted(o.agent_name for o in buses if o is not ivy)
                    assert sorted(p.name for p in ivy.peers) == others
                target = buses[0].agent_name
                for ivy in buses[1:]:
                    assert await ivy.send(f"to {target} x") == 1  # once, not twice
                stop.set()


async def test_timers_tick_count_and_interval(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Timers are tasks: counted ticks, a writable interval, cancel, end with the bus."""
    ticks: list[float] = []
    calls: list[float] = []
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("T", bus) as t:
            start = trio.current_time()
            three = t.start_timer(lambda: ticks.append(trio.current_time() - start), 0.5, count=3)
            await three.wait_finished()
            assert ticks == [0.5, 1.0, 1.5]
            assert three.ticks == 3 and not three.running

            async def tick() -> None:
                calls.append(trio.current_time())
                if len(calls) == 2:
                    forever.interval = 2.0  # takes effect at the next tick
                if len(calls) == 4:
                    forever.cancel()
                    await trio.sleep(100)  # cancelled at once: no 5th call

            forever = t.start_timer(tick, 1.0)
            await forever.wait_finished()
            gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(calls)]
            assert gaps == [1.0, 2.0, 2.0]

            endless = t.start_timer(lambda: None, 10.0)
            assert endless.running
        await endless.wait_finished()  # the bus ended its timer
        assert endless.ticks == 0


async def test_bad_arguments_get_clear_errors(bus: str) -> None:
    """A bad bus string, agent name, regexp or option: ValueError naming it."""
    import re

    for bad_bus in ("300.1:2010", "127:port", "127:0"):
        with pytest.raises(ValueError, match=re.escape(repr(bad_bus))):
            async with trivy.open_ivy_bus("A", bad_bus):
                raise AssertionError("joined a bad bus")
    for name in ("", "two\nlines"):
        with pytest.raises(ValueError, match="agent name"):
            async with trivy.open_ivy_bus(name, bus):
                raise AssertionError("joined with a bad name")
    with pytest.raises(ValueError, match="overflow"):
        async with trivy.open_ivy_bus("A", bus, overflow="explode"):  # type: ignore[arg-type]
            raise AssertionError("accepted a bad overflow policy")
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            with pytest.raises(ValueError, match=re.escape("'(unclosed'")):
                a.subscribe("(unclosed")
            with pytest.raises(ValueError, match="newline"):
                a.bind(lambda peer: None, "two\nlines")
            assert a.subscriptions == {}  # nothing half-made


async def test_wait_for_peer_on_a_stopped_bus_raises(bus: str) -> None:
    """A task outside the bus's block waiting for a peer is told, not left hanging."""
    outcome: list[BaseException] = []

    async def waiter(ivy: trivy.IvyBus) -> None:
        try:
            await ivy.wait_for_peer("nobody")
        except trivy.IvyIllegalStateError as exc:
            outcome.append(exc)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, trivy.open_ivy_bus("A", bus) as a:
            nursery.start_soon(waiter, a)
            await trio.testing.wait_all_tasks_blocked()
        assert len(outcome) == 1
        with pytest.raises(trivy.IvyIllegalStateError):
            await a.wait_for_peer("nobody")


async def test_disconnections_are_reported_even_to_a_full_event_stream(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            a.events(max_buffer=1) as full,
            a.events() as watch,
        ):
            async with trivy.open_ivy_bus("B", bus):
                await a.wait_for_peer("B")
            await wait_for_event(watch, trivy.PeerDisconnected)
            # B left while the first stream was full: its departure is not lost
            got = [type(full.receive_nowait()), type(full.receive_nowait())]
            assert got == [trivy.PeerConnected, trivy.PeerDisconnected]


async def test_two_consumers_share_a_subscription_without_errors() -> None:
    from trivy._channels import BufferedReceiveChannel

    channel: BufferedReceiveChannel[int] = BufferedReceiveChannel(5)
    got: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for item in channel:
                    got.append(item)

            nursery.start_soon(consume)
            nursery.start_soon(consume)
            for i in range(5000):
                await channel._put(i)
            channel._end()
    assert sorted(got) == list(range(5000))

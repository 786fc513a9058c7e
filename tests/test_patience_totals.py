"""The senders' patience with all the peers together, not only with each one.

A peer over its limit makes ``send`` wait, and one that does so too much
lately is let go (``stall_timeout``, forgiven a tenth of the quiet). Peers
slow in turns each stay within that while ``send`` waits nearly all the
time: these tests attack with them, in virtual time over real sockets.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
import trio
import trio.testing

import trivy
from trivy._patience import SharedPatience
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

TIMEOUT = 600  # virtual seconds
TEXT = "x" * 10_000


async def _slow_peer(bus: trivy.IvyBus, index: int) -> RawPeer:
    """Raw peer ``index`` (its own port), with a tiny receive buffer, on ``^(x*)$``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", bus.port))
    raw = RawPeer(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    await raw.send(b"6 %d\x02SLOW%d\n1 0\x02^(x*)$\n5 0\x02\n" % (2000 + index, index))
    await wait_for_subscription(bus, f"SLOW{index}", "^(x*)$")
    # a small send buffer on our end too: the stall is in the agent's queue,
    # not in megabytes of kernel buffers the test would have to fill
    port = sock.getsockname()[1]
    (ours,) = [s._sock for s in bus._peers if s.remote_address[1] == port]
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return raw


async def _send_for(bus: trivy.IvyBus, duration: float) -> float:
    """TEXT sent 50 times a second (500 kB/s a peer) for ``duration``: seconds ``send`` waited."""
    blocked = 0.0
    end = trio.current_time() + duration
    while trio.current_time() < end:
        start = trio.current_time()
        await bus.send(TEXT)
        blocked += trio.current_time() - start
        await trio.sleep(0.02)
    return blocked


async def send_in_bursts(bus: trivy.IvyBus, bursts: int, per_burst: int, text: str) -> float:
    """``bursts`` bursts of ``per_burst`` sends, 60 s of quiet after each (the
    waits forgiven): the seconds ``send`` waited."""
    blocked = 0.0
    for _ in range(bursts):
        start = trio.current_time()
        for _ in range(per_burst):
            await bus.send(text)
        blocked += trio.current_time() - start
        await trio.sleep(60)
    return blocked


async def _read_but_in_turn(raw: RawPeer, turn: int, turns: int, slot: float) -> None:
    """Read all it gets, but for one slot in ``turns``: its turn to make us wait."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            index = int(trio.current_time() / slot + 1e-9)  # (slots counted, not summed)
            if index % turns == turn:
                await trio.sleep_until((index + 1) * slot)
                continue
            with trio.move_on_at((index + (turn - index) % turns) * slot):
                while await raw.stream.receive_some(65536):
                    pass
                return  # (the end of the stream)


async def test_peers_slow_in_turns_cannot_keep_send_waiting(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """12 peers, each stalled one slot in 12 (within its own patience): send waited all along."""
    turns, slot, duration = 12, 0.5, 60.0
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a,
            a.events() as events,
        ):
            raws = [await _slow_peer(a, index) for index in range(turns)]
            congested = set()  # the peers whose MSGs were dropped while excused

            async def watch() -> None:
                async for event in events:
                    if isinstance(event, trivy.Congestion):
                        congested.add(event.peer.name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for turn, raw in enumerate(raws):
                    nursery.start_soon(_read_but_in_turn, raw, turn, turns, slot)
                blocked = await _send_for(a, duration)
                assert len(a.peers) == turns  # none disconnected for it
                nursery.cancel_scope.cancel()
            for raw in raws:
                await raw.aclose()
    print(f"send waited {blocked:.1f} s of {duration:g}; {len(congested)} peers excused")
    assert len(congested) == turns
    # the first 5 s, then one second in eleven (what is forgiven): 38 s
    # before the senders' patience with all the peers, 17 s when it
    # disconnected the peer with the most blame
    assert blocked < 0.2 * duration, blocked


async def test_peers_slow_in_turns_that_reconnect_cannot_keep_send_waiting(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The same 12, each reconnecting after its stall: 76 s of 120 when a
    disconnection took the peer's blame off the account."""
    turns, slot, duration = 12, 0.5, 60.0
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a:
            connections = 0

            async def slow_in_turn(turn: int) -> None:
                nonlocal connections
                for index in range(turn, 1_000_000, turns):
                    raw = await _slow_peer(a, index)
                    connections += 1
                    # its turn: read until it starts, stall through it, leave
                    now = int(trio.current_time() / slot + 1e-9)
                    starts = (now + (turn - now) % turns or turns) * slot
                    with trio.move_on_at(starts):
                        while await raw.stream.receive_some(65536):
                            pass
                    await trio.sleep_until(starts + slot)
                    await raw.aclose()

            async with trio.open_nursery() as nursery:
                for turn in range(turns):
                    nursery.start_soon(slow_in_turn, turn)
                blocked = await _send_for(a, duration)
                nursery.cancel_scope.cancel()
    print(f"send waited {blocked:.1f} s of {duration:g}; {connections} connections")
    assert connections > 5 * turns  # (they did come back, again and again)
    assert blocked < 0.2 * duration, blocked


async def _read_but_once(raw: RawPeer, stall_from: float, stall_to: float) -> None:
    """Read all it gets, but from ``stall_from`` to ``stall_to``."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        with trio.move_on_at(stall_from):
            while await raw.stream.receive_some(65536):
                pass
        await trio.sleep_until(stall_to)
        while await raw.stream.receive_some(65536):
            pass


async def test_others_filling_the_account_get_no_peer_dropped(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """30 peers each stalled once for 0.4 s, one after the other: they filled
    the senders' patience with all the peers; a peer that then lagged 0.6 s
    had the most blame and was disconnected: isolated for a lag well within
    its own patience."""
    attackers, stall = 30, 0.4
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a:
            raws = [await _slow_peer(a, index) for index in range(attackers + 1)]
            start = trio.current_time()
            lags = [(start + 0.45 * i, start + 0.45 * i + stall) for i in range(attackers)]
            lags.append((start + 14.0, start + 14.6))  # the last peer's, after theirs
            async with trio.open_nursery() as nursery:
                for raw, (stall_from, stall_to) in zip(raws, lags, strict=True):
                    nursery.start_soon(_read_but_once, raw, stall_from, stall_to)
                blocked = await _send_for(a, 20.0)
                left = sorted(peer.name for peer in a.peers)
                print(f"send waited {blocked:.1f} s; {len(left)} peers left")
                assert f"SLOW{attackers}" in left  # the peer that lagged once, later
                assert len(left) == attackers + 1  # nobody dropped
                # and what was sent after the lags reached them all
                assert await a.send("xx") == attackers + 1
                nursery.cancel_scope.cancel()
            for raw in raws:
                await raw.line_starting(b"2 0\x02xx\x03")
                await raw.aclose()


async def _stall_and_drain(bus: trivy.IvyBus, index: int, stall: float, drain: float) -> None:
    """A peer that stalls ``stall`` s then reads for ``drain`` s, again and again,
    reconnecting as another when dropped."""
    for again in range(1_000_000):
        raw = await _slow_peer(bus, 100 * again + index)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await trio.sleep(stall)
                with trio.move_on_after(drain):
                    while await raw.stream.receive_some(65536):
                        pass
        await raw.aclose()


@pytest.mark.parametrize(("overflow", "senders"), [("drop", 1), ("disconnect", 1), ("drop", 2)])
async def test_a_healthy_peers_burst_is_not_refused_while_the_account_is_spent(
    bus: str, autojump_clock: trio.testing.MockClock, overflow: str, senders: int
) -> None:
    """2 peers stalling in turns keep the senders' patience with all the peers
    spent; a healthy peer, over its limit only within a burst of ``send``
    calls that had not yielded yet, was excused at once: its MSGs refused
    (with ``overflow="disconnect"``: disconnected); and with two tasks
    sending, for what the other queued while its writer had its turn."""
    bursts, burst, small = 20 // senders, 200, "x" * 1000  # (for the stalling peers too)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus(
            "A", bus, send_buffer_limit=64 * 1024, overflow=overflow
        ) as a:
            healthy = await RawPeer.connect(a)
            # (the kernel takes a burst for it, however far its buffer has
            # grown: virtual time stands still while the senders run, and so
            # does its reading; a busy machine grew it too little once)
            healthy.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            await healthy.handshake("HEALTHY", b"1 0\x02^(x*)$\n")
            await wait_for_subscription(a, "HEALTHY", "^(x*)$")
            got, all_got, rest = 0, trio.Event(), b""

            async def read_healthy() -> None:
                nonlocal got, rest
                expected = b"2 0\x02%b\x03" % small.encode()
                while data := await healthy.stream.receive_some(65536):  # (6.4 MB/s)
                    *lines, rest = (rest + data).split(b"\n")
                    got += lines.count(expected)
                    if got == bursts * burst:
                        all_got.set()
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_healthy)
                for index in range(2):
                    nursery.start_soon(_stall_and_drain, a, index, 0.5, 0.02)
                await _send_for(a, 10.0)  # (the account spent)
                spent = a._router.pace.patience.account.waited(trio.current_time())

                async def send_bursts() -> None:
                    for _ in range(bursts // senders):
                        for _ in range(burst):  # (over its limit within the burst)
                            await a.send(small)
                        await _send_for(a, 1.0)

                async with trio.open_nursery() as senders_nursery:
                    for _ in range(senders):
                        senders_nursery.start_soon(send_bursts)
                with trio.move_on_after(5):
                    await all_got.wait()
                nursery.cancel_scope.cancel()
    print(f"the account: {spent:.2f} s of 5; the healthy peer got {got} of {bursts * burst}")
    assert spent > 4.5
    assert got == bursts * burst


async def test_an_agent_is_not_let_go_for_another_on_its_host(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that never reads is let go at its 5 s; the next connection from
    its host (on one machine, every agent's) started from that account, when
    accounts were remembered by host: a peer that then lagged once for 1 s
    was let go too."""
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a,
            a.events() as events,
            trio.open_nursery() as nursery,
        ):
            never = await _slow_peer(a, 0)  # (never reads)
            nursery.start_soon(_send_for, a, 60.0)
            left = await wait_for_event(events, trivy.PeerDisconnected)
            assert left.peer.name == "SLOW0", left
            lags = await _slow_peer(a, 1)
            start = trio.current_time()
            nursery.start_soon(_read_but_once, lags, start + 1, start + 2)
            await trio.sleep(20)
            assert "SLOW1" in [peer.name for peer in a.peers]
            nursery.cancel_scope.cancel()
            await never.aclose()


async def _trickle(raw: RawPeer, start: float) -> None:
    """Read all it gets until ``start``, then 64 KiB every 2 s."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        with trio.move_on_at(start):
            while await raw.stream.receive_some(65536):
                pass
        while True:
            await trio.sleep(2)
            if not await raw.stream.receive_some(65536):
                return


async def test_a_peers_own_patience_holds_while_it_is_excused(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that reads a trickle is let go once it alone kept the senders
    waiting 5 s; when another peer had made them wait a little before, the
    account of all the peers ran out first and excused it: it stayed for the
    whole minute, holding its MSGs."""
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a,
            a.events() as events,
        ):
            start = trio.current_time()
            lags, trickles = await _slow_peer(a, 0), await _slow_peer(a, 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_but_once, lags, start + 2.8, start + 3.1)
                nursery.start_soon(_trickle, trickles, start + 3.0)
                nursery.start_soon(_send_for, a, 60.0)
                left = await wait_for_event(events, trivy.PeerDisconnected)
                while left.peer.name != "SLOW1":
                    left = await wait_for_event(events, trivy.PeerDisconnected)
                nursery.cancel_scope.cancel()
            assert [peer.name for peer in a.peers] == ["SLOW0"]
    assert isinstance(left, trivy.PeerDisconnected), left
    print(f"let go after {trio.current_time() - start:.1f} s: {left.reason}")
    assert "over its limit" in left.reason
    assert trio.current_time() - start < 15  # (for the whole minute before)


async def test_peers_behind_now_and_then_are_never_let_go(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Bursts that several slow peers take a while to read, with quiet between them."""
    peers, bursts, per_burst = 3, 6, 300
    with trio.fail_after(10_000):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a:
            raws = [await _slow_peer(a, index) for index in range(peers)]
            async with trio.open_nursery() as nursery:
                for turn, raw in enumerate(raws):  # each stalls 0.1 s in 0.3 s
                    nursery.start_soon(_read_but_in_turn, raw, turn, peers, 0.1)
                blocked = await send_in_bursts(a, bursts, per_burst, TEXT)
                assert len(a.peers) == peers  # never let go
                nursery.cancel_scope.cancel()
            for raw in raws:
                await raw.aclose()
    # the sends did wait, more than the patience in all
    assert blocked > 2 * a.options.stall_timeout, blocked


async def test_a_peer_that_reconnects_before_its_patience_runs_out_gets_no_new_one(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A never-reader that reconnects every 4.5 s, just within 5 s a connection."""
    duration = 60.0
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a,
            a.events() as events,
        ):
            end = trio.current_time() + duration

            async def reconnect() -> None:
                for index in range(10_000):
                    raw = await _slow_peer(a, index)
                    with trio.move_on_after(4.5):  # (or at once, once dropped)
                        while True:
                            left = await wait_for_event(events, trivy.PeerDisconnected)
                            if left.peer.name == f"SLOW{index}":
                                break
                    await raw.aclose()
                    if trio.current_time() > end:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reconnect)
                blocked = await _send_for(a, duration)
                nursery.cancel_scope.cancel()
    print(f"send waited {blocked:.1f} s of {duration:g}")
    # the 5 s of the account for all the peers (leaving takes nothing off
    # it), then one second in eleven (what is forgiven): 60 s before
    assert blocked < 0.25 * duration, blocked


async def test_a_reader_paused_for_its_peer_is_no_sender_waiting(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that floods PINGs and never reads their PONGs pauses its own
    reader: charged to it, not to the senders' patience with all the peers
    (which it would fill, and get another peer dropped)."""
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=64 * 1024) as a:
            raw = await _slow_peer(a, 0)
            (session,) = a._peers
            with contextlib.suppress(trio.TooSlowError):
                with trio.fail_after(2):  # (until the agent stops reading it)
                    while True:
                        await raw.send(b"".join(b"9 %d\x02\n" % i for i in range(10_000)))
            await trio.sleep(1)
            now = trio.current_time()
            assert session.output._patience.waited(now) > 1  # its reader waited for it
            assert a._router.pace.patience.account.waited(now) == 0
            await raw.aclose()


def test_the_shared_account_counts_any_wait_and_forgives_only_quiet() -> None:
    shared = SharedPatience(5.0)
    first, second = object(), object()
    shared.start_waiting(first, 100.0)
    shared.start_waiting(second, 101.0)  # (two at once: counted once)
    shared.stop_waiting(first, 103.0)
    shared.stop_waiting(second, 104.0)
    assert shared.account.waited(104.0) == pytest.approx(4.0)
    shared.stop_waiting(second, 105.0)  # (not waited for: nothing changes)
    # 10 s of quiet forgive 1 s; nobody's leaving takes anything off
    shared.start_waiting(first, 114.0)
    assert shared.runs_out_at() == pytest.approx(116.0)  # 2 s left of 5

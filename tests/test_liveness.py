"""Liveness: stalled, slow, silent and vanished peers, and leaving (issue: liveness).

Timing is virtual (``autojump_clock``) over real loopback sockets: the
clock jumps only when every task waits, so a timeout fires exactly when
nothing else can happen first.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import socket
import time

import pytest
import trio
import trio.testing

import trivy
from trivy._liveness import configure_keepalive
from trivy._output import PeerOutput
from trivy._patience import Patience
from trivy._peers import MAX_PENDING_HANDSHAKES
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

from .test_patience_totals import send_in_bursts

TIMEOUT = 60  # virtual seconds, where the clock is mocked

TEXT = "x" * 1000
#: Enough for a stuck peer to be over the default 4 MiB limit even after
#: the kernel buffers took their share.
COUNT = 12_000


async def _small_window_peer(bus: trivy.IvyBus, name: str, regexp: bytes) -> RawPeer:
    """A raw peer with a tiny receive buffer, so that our output backs up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", bus.port))
    raw = RawPeer(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    await raw.handshake(name, b"1 0\x02" + regexp + b"\n")
    await wait_for_subscription(bus, name, regexp.decode())
    return raw


async def _count_matches(sub: trivy.Subscription, got: list[int], count: int) -> None:
    async for _match in sub:
        got[0] += 1
        if got[0] == count:
            return


async def test_a_peer_that_stops_reading_is_dropped_after_the_stall_timeout(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            a.events() as events,
            trivy.open_ivy_bus("GOOD", bus) as good,
        ):
            sub = good.subscribe("^(x*)$")
            await wait_for_subscription(a, "GOOD", "^(x*)$")
            stuck = await _small_window_peer(a, "STUCK", b"^(.*)$")
            got = [0]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_count_matches, sub, got, COUNT)
                start = trio.current_time()
                for _ in range(COUNT):
                    await a.send(TEXT)
                blocked = trio.current_time() - start
            # the sends were held for the stall timeout, no longer: one more
            # interval when a window update of the kernel's (real time) lands
            # in the first one (virtual time, which the clock jumps through)
            assert blocked in (pytest.approx(5.0), pytest.approx(10.0))
            assert got == [COUNT]  # lossless for the peer that reads
            left = await wait_for_event(events, trivy.PeerDisconnected)
            assert isinstance(left, trivy.PeerDisconnected)
            assert left.peer.name == "STUCK"
            # (the senders' patience runs out at the same time)
            assert left.reason.startswith(
                ("took no byte for 5 s with ", "kept our senders waiting 5 s")
            )
            assert [p.name for p in a.peers] == ["GOOD"]
            await stuck.aclose()


async def _read_slowly(raw: RawPeer, size: int, every: float, got: list[int]) -> None:
    """Take ``size`` bytes every ``every`` seconds, until the end of the stream."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            wanted = size
            while wanted > 0:
                data = await raw.stream.receive_some(wanted)
                if not data:
                    return
                got[0] += len(data)
                wanted -= len(data)
            await trio.sleep(every)


async def test_a_peer_that_trickles_is_let_go_once_it_kept_senders_waiting_too_long(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    received = [0]
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=1024 * 1024) as a,
            a.events() as events,
        ):
            slow = await _small_window_peer(a, "TRICKLE", b"^(x*)$")
            async with trio.open_nursery() as nursery:
                # 64 KiB every 4 s: some bytes before every stall check
                nursery.start_soon(_read_slowly, slow, 65536, 4.0, received)
                start = trio.current_time()
                for _ in range(COUNT):
                    await a.send(TEXT)
                blocked = trio.current_time() - start
                left = await wait_for_event(events, trivy.PeerDisconnected)
                await slow.aclose()
            assert isinstance(left, trivy.PeerDisconnected)
            assert left.reason.startswith("kept our senders waiting 5 s over its limit")
            # no send waited past the patience of 5 s for it, though it did read
            assert blocked == pytest.approx(5.0, abs=0.01)
            assert received[0] > 0


async def test_a_peer_that_is_behind_now_and_then_is_never_let_go(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    bursts, per_burst = 8, 4000
    received = [0]
    with trio.fail_after(10_000):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=256 * 1024) as a:
            slow = await _small_window_peer(a, "SLOW", b"^(x*)$")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_slowly, slow, 65536, 0.1, received)
                blocked = await send_in_bursts(a, bursts, per_burst, TEXT)
                assert [p.name for p in a.peers] == ["SLOW"]  # never let go
                nursery.cancel_scope.cancel()
            # the sends did wait, more than the patience in all
            assert blocked > 2 * a.options.stall_timeout
            assert received[0] >= bursts * per_burst * len(TEXT)
            await slow.aclose()


def _socket_pair(buffer: int = 4096) -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection, with small buffers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.socket()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        theirs.connect(listener.getsockname())
        ours, _ = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    ours.setblocking(False)
    return ours, theirs


async def _read_every(sock: socket.socket, every: float, got: list[int]) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    while data := await stream.receive_some(1024):
        got[0] += len(data)
        await trio.sleep(every)


class _Bytes:
    """An output source of plain bytes (PeerOutput's side of a Connection)."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.bytes_unsent = 0
        self.send_limit = 0
        self.wake_output = None
        self.excused = False

    @property
    def bytes_queued(self) -> int:
        return len(self.data)

    def data_to_send(self) -> bytearray:
        data, self.data = self.data, bytearray()
        return data


async def flush_and_close(
    sock: socket.socket, source: _Bytes, stop_timeout: float, leave_timeout: float
) -> int:
    """What a leaving session does with what it still has for the peer."""
    return await PeerOutput(sock, source, "PEER", 5.0).leave(stop_timeout, leave_timeout)


async def test_leaving_flushes_a_slow_peer_and_gives_up_on_a_stuck_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = _socket_pair()
    got = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_every, theirs, 0.04, got)  # slow, but progress
        assert await flush_and_close(ours, _Bytes(100_000), 0.5, 100) == 0
    assert got == [100_000]  # everything, then EOF

    ours, theirs = _socket_pair()
    start = trio.current_time()
    out = _Bytes(1_000_000)
    unsent = await flush_and_close(ours, out, 0.5, 100)
    assert unsent > 900_000 and not out.data
    assert trio.current_time() - start == pytest.approx(0.5)  # one stop_timeout
    theirs.close()


async def test_leaving_never_takes_longer_than_leave_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = _socket_pair()
    got = [0]
    async with trio.open_nursery() as nursery:
        # a kilobyte every 0.5 s: progress within every stop_timeout (2 s)
        nursery.start_soon(_read_every, theirs, 0.5, got)
        start = trio.current_time()
        unsent = await flush_and_close(ours, _Bytes(10_000_000), 2.0, 10.0)
        assert trio.current_time() - start == pytest.approx(10.0)
        assert unsent > 0
    assert 0 < got[0] < 10_000_000


@pytest.mark.parametrize("way_out", ["outer cancel", "KeyboardInterrupt", "stop", "DIE"])
async def test_every_way_out_says_bye(bus: str, way_out: str) -> None:
    with trio.fail_after(10):
        raw = None
        with trio.move_on_after(5 if way_out == "outer cancel" else 10) as outer:
            try:
                async with trivy.open_ivy_bus("A", bus) as a:
                    raw = await RawPeer.connect(a)
                    await raw.handshake("RAW", b"1 0\x02^(.*)\n")
                    await wait_for_subscription(a, "RAW", "^(.*)")
                    await a.send("last words")
                    if way_out == "outer cancel":
                        outer.cancel()
                        await trio.sleep_forever()
                    elif way_out == "KeyboardInterrupt":
                        raise KeyboardInterrupt
                    elif way_out == "stop":
                        a.stop()
                        await trio.sleep_forever()
                    else:
                        await raw.send(b"8 0\x02\n")
                        await trio.sleep_forever()
            except KeyboardInterrupt:
                assert way_out == "KeyboardInterrupt"
        assert raw is not None
        assert await raw.line_starting(b"2 ") == b"2 0\x02last words\x03"
        assert await raw.line() == b"0 0\x02"  # BYE, after what was queued
        assert await raw.line() == b""
        await raw.aclose()


async def test_a_silent_peer_is_pinged_reported_and_welcomed_back(
    bus: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trivy")
    with trio.fail_after(TIMEOUT * 10):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as events:
            raw = await RawPeer.connect(a)
            await raw.handshake("FROZEN")
            await wait_for_event(events, trivy.PeerConnected)
            start = trio.current_time()
            ping = await raw.line_starting(b"9 ")  # a heartbeat, unanswered
            assert 10 <= trio.current_time() - start <= 20
            silent = await wait_for_event(events, trivy.PeerUnresponsive)
            assert isinstance(silent, trivy.PeerUnresponsive)
            assert silent.peer.name == "FROZEN"
            assert 30 <= silent.silent_for <= 40
            assert 30 <= trio.current_time() - start <= 40
            assert [p.name for p in a.peers] == ["FROZEN"]  # reported, not dropped
            assert ping.startswith(b"9 ")
            while True:  # it thaws, and answers the latest PING
                ping = await raw.line_starting(b"9 ")
                if silent.silent_for + 10 <= trio.current_time() - start:
                    break
            await raw.send(b"10 " + ping[2:].rstrip(b"\x02") + b"\n")
            back = await wait_for_event(events, trivy.PeerResponsive)
            assert back == trivy.PeerResponsive(silent.peer)
            assert "PONG for no PING" not in caplog.text  # the PING it answered was ours
            await raw.aclose()


async def test_a_silent_peer_is_dropped_when_the_options_say_so(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT * 10):
        options = {"drop_unresponsive": True, "heartbeat_interval": 1, "unresponsive_timeout": 3}
        # (a short stop_timeout: the kernel's delayed ACKs come in real time)
        async with (
            trivy.open_ivy_bus("A", bus, stop_timeout=0.1, **options) as a,  # type: ignore[arg-type]
            a.events() as events,
        ):
            raw = await RawPeer.connect(a)
            await raw.handshake("FROZEN")
            await wait_for_event(events, trivy.PeerConnected)
            start = trio.current_time()
            left = await wait_for_event(events, trivy.PeerDisconnected)
            assert isinstance(left, trivy.PeerDisconnected)
            assert left.reason == "silent for 3 s"
            assert 3 <= trio.current_time() - start <= 4
            await raw.aclose()


async def test_peers_that_answer_pings_are_never_reported(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(TIMEOUT * 100):
        async with (
            trivy.open_ivy_bus("A", bus, drop_unresponsive=True) as a,
            trivy.open_ivy_bus("B", bus, drop_unresponsive=True) as b,
            a.events() as events,
        ):
            peer = await a.wait_for_peer("B")
            session = a._peers.session_of(peer)
            pings_before = session.pings.sent
            await trio.sleep(600)  # ten idle minutes, virtual
            assert session.pings.sent - pings_before >= 20  # heartbeats...
            assert a.peers == [peer] and [p.name for p in b.peers] == ["A"]
            seen = set()
            with pytest.raises(trio.WouldBlock):
                while True:
                    seen.add(type(events.receive_nowait()))
            assert seen <= {trivy.PeerConnected}  # ...all answered: nothing reported


async def test_the_kernel_is_told_to_give_up_on_a_vanished_host(bus: str) -> None:
    with trio.fail_after(10):
        async with (
            trivy.open_ivy_bus("A", bus, dead_host_timeout=20) as a,
            trivy.open_ivy_bus("B", bus),
        ):
            session = a._peers.session_of(await a.wait_for_peer("B"))
            sock = session._sock  # (what the kernel was told is on the socket)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 20_000
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2
            # a long timeout stays within what the kernel takes (127 probes)
            configure_keepalive(sock, 3600)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3_600_000
            count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
            interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
            assert count <= 127 and 10 + count * interval <= 3600


async def test_connections_that_never_speak_cannot_lock_peers_out(bus: str) -> None:
    with trio.fail_after(30):
        async with trivy.open_ivy_bus("A", bus) as a:
            silent = [
                await trio.open_tcp_stream("127.0.0.1", a.port)
                for _ in range(MAX_PENDING_HANDSHAKES + 10)
            ]
            # the ten oldest were closed to make room...
            for stream in silent[:10]:
                assert await stream.receive_some(100) == b"6 %d\x02A\n5 0\x02\n" % a.port
                assert await stream.receive_some(100) == b""
            while sum(not s.ready for s in a._peers) > MAX_PENDING_HANDSHAKES:
                await trio.testing.wait_all_tasks_blocked()
            # ...and a real peer still gets in
            async with trivy.open_ivy_bus("B", bus) as b:
                await a.wait_for_peer("B")
                await b.wait_for_peer("A")
            for stream in silent:
                await stream.aclose()


async def test_out_of_file_descriptors_the_listener_backs_off_and_recovers(
    bus: str, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "trivy")
    with trio.fail_after(600):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as events:
            clients = [socket.socket() for _ in range(12)]
            for client in clients:
                client.setblocking(False)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 4, hard))
            try:
                for client in clients:  # the kernel queues them: no descriptor yet
                    with contextlib.suppress(BlockingIOError):
                        client.connect(("127.0.0.1", a.port))
                # the last one is a real peer, behind eleven that never speak
                legit = RawPeer(trio.SocketStream(trio.socket.from_stdlib_socket(clients[-1])))
                await legit.handshake("LEGIT")
                connected = await wait_for_event(events, trivy.PeerConnected)
                assert isinstance(connected, trivy.PeerConnected)
                assert connected.peer.name == "LEGIT"
                # the silent ones were each closed after the handshake deadline
                assert trio.current_time() >= 30
                assert "accept failed: [Errno 24] Too many open files; retrying" in caplog.text
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                client.close()


async def test_announces_of_agents_that_never_answer_are_bounded(
    bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    from trivy import protocol
    from trivy._connect_queue import MAX_CONNECTING

    caplog.set_level(logging.INFO, logger="trivy")
    address = protocol.parse_bus(bus)
    deaf = []
    for _ in range(MAX_CONNECTING + 6):
        listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        # a full backlog: further SYNs are dropped, so connecting hangs
        fillers = [socket.socket() for _ in range(2)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
        deaf.append((listener, fillers))
    with trio.fail_after(10):
        async with trivy.open_ivy_bus("A", bus) as a:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for i, (listener, _) in enumerate(deaf):
                port = listener.getsockname()[1]
                datagram = protocol.encode_announce(port, f"deaf{i}", "DEAF")
                udp.sendto(datagram, (address.networks[0], address.port))
            udp.close()
            while "connections pending" not in caplog.text:
                await trio.testing.wait_all_tasks_blocked()
            assert len(a._discovery._attempts) == MAX_CONNECTING
    for listener, fillers in deaf:
        listener.close()
        for filler in fillers:
            filler.close()


async def test_our_own_frozen_loop_is_not_blamed_on_the_peers(bus: str) -> None:
    fast = {"heartbeat_interval": 0.1, "unresponsive_timeout": 0.3, "drop_unresponsive": True}
    with trio.fail_after(20):
        async with (
            trivy.open_ivy_bus("A", bus, **fast) as a,  # type: ignore[arg-type]
            trivy.open_ivy_bus("B", bus) as b,
            a.events() as events,
        ):
            peer = await a.wait_for_peer("B")
            await b.wait_for_peer("A")
            session = a._peers.session_of(peer)
            pings = session.pings.sent
            for _ in range(3):
                time.sleep(1.0)  # noqa: ASYNC251 (the point: a callback blocking the loop)
                await trio.sleep(0.5)  # five heartbeats after it
            assert session.pings.sent > pings  # the heartbeat did run
            assert a.peers == [peer]
            seen = set()
            with pytest.raises(trio.WouldBlock):
                while True:
                    seen.add(type(events.receive_nowait()))
            assert trivy.PeerUnresponsive not in seen and trivy.PeerDisconnected not in seen


async def test_ctrl_c_in_a_peer_task_still_says_bye_to_every_peer(bus: str) -> None:
    def interrupted(peer: trivy.Peer, *groups: str) -> None:
        raise KeyboardInterrupt  # as if Ctrl-C landed while this peer's task ran

    with trio.fail_after(10):
        with pytest.raises(KeyboardInterrupt):
            async with trivy.open_ivy_bus("A", bus) as a:
                sub_id = a.bind(interrupted, "^boom$")
                raws = [await RawPeer.connect(a) for _ in range(3)]
                for number, raw in enumerate(raws):  # (each its own port: no duplicates)
                    await raw.send(b"6 %d\x02RAW%d\n5 0\x02\n" % (1000 + number, number))
                    await a.wait_for_peer(f"RAW{number}")
                await raws[0].send(b"2 %d\x02\n" % sub_id)  # a MSG for our "^boom$"
                await trio.sleep_forever()
        for raw in raws:
            assert await raw.line_starting(b"0 ") == b"0 0\x02"  # BYE
            await raw.aclose()


def test_patience_adds_up_the_waits_and_forgives_a_tenth_of_the_quiet() -> None:
    patience = Patience(5.0)
    patience.start_waiting(100.0)
    assert patience.runs_out_at() == 105.0  # a first wait may last the budget
    patience.stop_waiting(103.0)
    assert patience.waited(103.0) == 3.0
    assert patience.waited(113.0) == pytest.approx(2.0)  # 10 s quiet forgive 1 s
    patience.start_waiting(113.0)
    assert patience.runs_out_at() == pytest.approx(116.0)  # 3 s left, not 5
    patience.stop_waiting(114.0)
    assert patience.waited(200.0) == 0.0  # all forgiven, never below nothing
    assert Patience(math.inf).runs_out_at() == math.inf

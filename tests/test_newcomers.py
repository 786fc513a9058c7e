"""No newcomer shut out: announces of ports that never answer, and the queue.

Timing is virtual (``autojump_clock``) over real loopback sockets: a
connect to a listener whose accept queue is full hangs in the kernel, and
the clock jumps to its timeout as soon as every task waits.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import trio
import trio.testing

import trivy
from trivy import protocol
from trivy._connect_queue import (
    FIRST_FAILURE_PENALTY,
    HANGING_PENALTY,
    MAX_CONNECTING,
    MAX_CONNECTING_PER_HOST,
    MAX_WAITING_PER_HOST,
    ConnectQueue,
)
from trivy._discovery import CONNECT_TIMEOUT


@contextlib.contextmanager
def _ports_that_never_answer(count: int) -> Iterator[list[int]]:
    """Listeners whose accept queue is full: a SYN to them is dropped."""
    sockets: list[socket.socket] = []
    ports = []
    try:
        for _ in range(count):
            listener = socket.create_server(("127.0.0.1", 0), backlog=0)
            sockets.append(listener)
            ports.append(listener.getsockname()[1])
            for _ in range(3):
                filler = socket.socket()
                sockets.append(filler)
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
        yield ports
    finally:
        for sock in sockets:
            sock.close()


async def _announce_again_and_again(bus: str, ports: list[int], every: float) -> None:
    address = protocol.parse_bus(bus)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        while True:
            for port in ports:
                datagram = protocol.encode_announce(port, f"deaf{port}", "DEAF")
                udp.sendto(datagram, (address.networks[0], address.port))
            await trio.sleep(every)


async def test_announces_that_hang_every_slot_cannot_shut_out_a_newcomer(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    with _ports_that_never_answer(MAX_CONNECTING + 16) as ports, trio.fail_after(60):
        async with trivy.open_ivy_bus("A", bus) as a, trio.open_nursery() as attack:
            attack.start_soon(_announce_again_and_again, bus, ports, CONNECT_TIMEOUT)
            while len(a._discovery._attempts) < MAX_CONNECTING:  # every slot hangs
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1.0)  # the newcomer comes in the middle of the flood
            start = trio.current_time()
            async with trivy.open_ivy_bus("NEWCOMER", bus):
                # it announces once; A connects to it as soon as a slot frees
                await a.wait_for_peer("NEWCOMER")
                joined = trio.current_time() - start
            # and again, long after: re-announcing the same ports wins nothing
            await trio.sleep(3 * CONNECT_TIMEOUT)
            start = trio.current_time()
            async with trivy.open_ivy_bus("LATER", bus):
                await a.wait_for_peer("LATER")
                later = trio.current_time() - start
            attack.cancel_scope.cancel()
    assert joined <= CONNECT_TIMEOUT
    assert later < 0.1  # the hanging ports are ignored: a slot was free


def test_an_announce_that_finds_no_slot_waits_its_turn_by_host() -> None:
    queue = ConnectQueue()
    for port in range(MAX_CONNECTING_PER_HOST):
        assert queue.offer("10.0.0.9", port, None, 0.0) == "connect"
    assert queue.offer("10.0.0.9", 99, None, 0.0) == "queued"  # its host's cap
    assert queue.offer("10.0.0.9", 99, None, 0.0) == "known"
    assert queue.offer("10.0.0.7", 1, "new", 0.0) == "connect"  # another host: at once
    for port in range(MAX_CONNECTING - MAX_CONNECTING_PER_HOST - 1):
        assert queue.offer("127.0.0.1", port, None, 0.0) == "connect"  # no cap here
    assert queue.offer("10.0.0.8", 5, "newer", 0.0) == "queued"  # every slot taken
    # a slot frees: the hosts that wait take turns, oldest first
    assert queue.done("127.0.0.1", 0, timed_out=True, now=1.0) == [("10.0.0.8", 5, "newer")]
    assert queue.done("127.0.0.1", 1, timed_out=False, now=1.0) == []  # 10.0.0.9 at its cap
    assert queue.done("10.0.0.9", 0, timed_out=True, now=1.0) == [("10.0.0.9", 99, None)]
    # an address that timed out is ignored for a while, then tried again
    assert queue.offer("127.0.0.1", 0, None, 2.0) == "hanging"
    assert queue.offer("127.0.0.1", 0, None, 1.0 + HANGING_PENALTY) == "connect"


def test_the_waiting_announces_are_bounded() -> None:
    queue = ConnectQueue()
    for port in range(MAX_CONNECTING):
        assert queue.offer("127.0.0.1", port, None, 0.0) == "connect"
    for port in range(MAX_WAITING_PER_HOST):
        assert queue.offer("127.0.0.1", 1000 + port, None, 0.0) == "queued"
    assert queue.offer("127.0.0.1", 5000, None, 0.0) == "full"
    assert queue.offer("10.0.0.1", 1, None, 0.0) == "queued"  # another host still waits


def test_an_address_that_fails_its_handshake_is_ignored_longer_each_time() -> None:
    queue = ConnectQueue()
    now = 0.0
    for penalty in (0.5, 1.0, 2.0, 4.0):
        assert queue.offer("10.0.0.5", 80, None, now) == "connect"
        queue.done("10.0.0.5", 80, timed_out=False, now=now)
        queue.failed("10.0.0.5", 80, now)
        assert queue.offer("10.0.0.5", 80, None, now + penalty - 0.01) == "hanging"
        now += penalty
    for _ in range(20):  # never past the penalty of an attempt that hangs
        queue.failed("10.0.0.5", 80, now)
    assert queue.offer("10.0.0.5", 80, None, now + HANGING_PENALTY) == "connect"
    queue.done("10.0.0.5", 80, timed_out=False, now=now)
    queue.succeeded("10.0.0.5", 80)  # a handshake made: the count starts over
    queue.failed("10.0.0.5", 80, now)
    assert queue.offer("10.0.0.5", 80, None, now + FIRST_FAILURE_PENALTY) == "connect"


async def test_announces_of_listeners_that_hang_up_do_not_make_a_connection_each(
    bus: str,
) -> None:
    """400 such addresses announced as fast as possible: 101,157 connections in 14 s."""
    accepted = 0

    async def hang_up(listener: trio.socket.SocketType) -> None:
        nonlocal accepted
        while True:
            sock, _ = await listener.accept()
            accepted += 1
            sock.close()

    listeners = []
    for _ in range(4):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
    ports = [listener.getsockname()[1] for listener in listeners]
    with trio.fail_after(30):
        async with trivy.open_ivy_bus("A", bus), trio.open_nursery() as attack:
            for listener in listeners:
                attack.start_soon(hang_up, listener)
            attack.start_soon(_announce_again_and_again, bus, ports, 0.01)
            await trio.sleep(1.5)  # about 150 announces of each
            attack.cancel_scope.cancel()
    for listener in listeners:
        listener.close()
    # 0.5 s, 1 s, 2 s... between two tries of one address: 3 or 4 each in 1.5 s
    assert 4 <= accepted <= 5 * len(ports), accepted


async def test_one_host_holding_every_connection_makes_room_for_another(bus: str) -> None:
    """1,000 connections of one host that said hello and then nothing kept
    every newcomer out: now one from another host takes the place of that
    host's newest, and that host gets no more than its share."""
    from trivy.testing import RawPeer

    most = 8
    with trio.fail_after(20):
        async with trivy.open_ivy_bus("A", bus, max_peers=most) as a:
            hogs = []
            for i in range(most):
                stream = await trio.open_tcp_stream("127.0.0.1", a.port, local_address="127.0.0.2")
                hog = RawPeer(stream)
                await hog.send(b"6 %d\x02HOG%d\n5 0\x02\n" % (30_000 + i, i))
                hogs.append(hog)
            while len(a.peers) < most:
                await trio.testing.wait_all_tasks_blocked()
            # one more of that host is closed at once
            extra = RawPeer(
                await trio.open_tcp_stream("127.0.0.1", a.port, local_address="127.0.0.2")
            )
            assert await extra.stream.receive_some(100) == b""
            async with trivy.open_ivy_bus("NEWCOMER", bus) as newcomer:
                await a.wait_for_peer("NEWCOMER")
                await newcomer.wait_for_peer("A")
                names = sorted(p.name for p in a.peers)
                assert "NEWCOMER" in names and "HOG7" not in names  # (its newest went)
                assert len([n for n in names if n.startswith("HOG")]) == most - 1
            for hog in hogs:
                await hog.aclose()


async def test_many_addresses_cannot_push_a_hosts_agents_out(bus: str) -> None:
    """Each new address took the place of the busiest host's newest: 10
    addresses of one connection evicted 9 of a host's 10 agents. A host
    holding a sixteenth of the connections or fewer is never evicted."""
    from trivy.testing import RawPeer

    most = 32
    with trio.fail_after(20):
        async with trivy.open_ivy_bus("A", bus, max_peers=most) as a:
            agents = []
            for i in range(2):  # (32 // 16: within its share)
                agent = await RawPeer.connect(a)
                await agent.send(b"6 %d\x02AGENT%d\n5 0\x02\n" % (31_000 + i, i))
                agents.append(agent)
            others = []
            for i in range(most - 2 + 5):  # one address each, 5 past the bound
                stream = await trio.open_tcp_stream(
                    "127.0.0.1", a.port, local_address=f"127.1.0.{i + 1}"
                )
                other = RawPeer(stream)
                await other.send(b"6 %d\x02OTHER%d\n5 0\x02\n" % (32_000 + i, i))
                others.append(other)
                await trio.testing.wait_all_tasks_blocked()
            names = {p.name for p in a.peers}
            assert {"AGENT0", "AGENT1"} <= names and len(a.peers) == most
            for peer in (*agents, *others):
                await peer.aclose()

"""What the application sends one peer (direct messages, ERROR, DIE, raw
lines) is bounded like a MSG: none of these calls can wait, so past the
peer's limit plus its excess they are refused under the overflow policy.

Before, they were queued whatever the peer held: a broker user flooding 1 MB
direct messages, through the bridge, to a local agent reading 64 KiB a
second grew the bridge to 3.9 GB in 25 s.
"""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

import trivy
from trivy._send_buffer import MAX_EXCESS, MAX_LINE_LENGTH
from trivy.protocol import MsgType
from trivy.testing import RawPeer, wait_for_event

TIMEOUT = 10
LIMIT = 64 * 1024
TEXT = "x" * 500_000


async def _ready_peer_that_never_reads(bus: trivy.IvyBus) -> tuple[RawPeer, trivy.Peer]:
    raw = await RawPeer.connect(bus)
    await raw.handshake("RAW")
    return raw, await bus.wait_for_peer("RAW")


async def _fill(bus: trivy.IvyBus, peer: trivy.Peer) -> int:
    """Direct messages to ``peer`` until one is refused; how many were queued."""
    for queued in range(200):  # 100 MB of text
        if not bus.send_direct(peer, queued, TEXT):
            return queued
        await trio.lowlevel.checkpoint()  # (the writer hands the kernel what it takes)
    raise AssertionError("200 messages queued for a peer that reads nothing")


def _held(bus: trivy.IvyBus) -> int:
    (session,) = list(bus._peers)
    return session.output.size


@pytest.mark.parametrize("kind", ["direct", "error", "raw", "die"])
async def test_messages_to_a_peer_that_never_reads_stop_at_its_limit_and_excess(
    bus: str, kind: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=LIMIT) as a,
            a.events() as events,
        ):
            raw, peer = await _ready_peer_that_never_reads(a)
            send = {
                "direct": lambda: a.send_direct(peer, 1, TEXT),
                "error": lambda: a.send_error(peer, 1, TEXT),
                "raw": lambda: a.send_raw(peer, MsgType.DIRECT_MSG, 1, TEXT),
                "die": lambda: a.send_die(peer),
            }[kind]
            if kind == "die":  # a DIE is small: fill the buffer first
                await _fill(a, peer)
            for _ in range(200):  # 100 MB of text
                if not send():
                    break
                await trio.lowlevel.checkpoint()
            else:
                pytest.fail("200 messages queued for a peer that reads nothing")
            assert _held(a) <= LIMIT + MAX_EXCESS + MAX_LINE_LENGTH
            congestion = await wait_for_event(events, trivy.Congestion)
            assert congestion.peer == peer
            assert congestion.dropped > 0
            assert not send()  # still full: refused again
            assert peer in a.peers  # dropped messages, not the peer
            await raw.aclose()


async def test_a_refused_message_follows_the_disconnect_policy(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_buffer_limit=LIMIT, overflow="disconnect") as a,
            a.events() as events,
        ):
            raw, peer = await _ready_peer_that_never_reads(a)
            await _fill(a, peer)
            gone = await wait_for_event(events, trivy.PeerDisconnected)
            assert gone.peer == peer
            assert peer not in a.peers
            await raw.aclose()


async def test_messages_are_taken_again_once_the_peer_has_read(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=LIMIT) as a:
            raw, peer = await _ready_peer_that_never_reads(a)
            sent = await _fill(a, peer)
            received = 0
            while received < sent:  # everything queued arrives, in order
                line = await raw.line()
                if line.startswith(b"7 "):
                    assert line == b"7 %d\x02%s" % (received, TEXT.encode())
                    received += 1
            assert a.send_direct(peer, sent, "after")
            assert await raw.line_starting(b"7 %d\x02" % sent) == b"7 %d\x02after" % sent
            await raw.aclose()


async def test_a_request_that_cannot_be_queued_fails_at_once(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_buffer_limit=LIMIT) as a:
            raw, peer = await _ready_peer_that_never_reads(a)
            await _fill(a, peer)
            with pytest.raises(trivy.RequestFailed, match="over its limit"):
                await a.requests.ask(peer, "question")
            await raw.aclose()

"""Bad and odd input from real peers, over real sockets: nothing else is lost.

A raw-socket peer replays the bytes that ivy-c, ivy-java and ivy-python
really sent (see ``transcripts.py``) to a trivy bus, and reads its answers.
"""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trivy
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

from .transcripts import PEER_NAMES, PEER_TCP, RECORDER_HANDSHAKE, RECORDER_TCP

TIMEOUT = 10
BAD_FORMAT = b"3 3\x02bad format request expected 'type id ...'"


async def _skip_handshake(raw: RawPeer) -> None:
    assert await raw.line_starting(b"5 0\x02") == b"5 0\x02"


async def test_trivy_reads_every_reference_transcript(bus: str) -> None:
    """The recorder's subscriptions, replayed against trivy: same groups out."""
    for implementation, chunks in PEER_TCP.items():
        with trio.fail_after(TIMEOUT):
            async with trivy.open_ivy_bus("RECORDER", bus) as me, me.events() as events:
                rec = me.subscribe(r"^rec (.*)")  # id 0, as in the transcripts
                me.subscribe(r"^placeholder")  # id 1
                multi = me.subscribe(r"^multi (a)?(b)?(c)?")  # id 2
                raw = await RawPeer.connect(me)
                for chunk in chunks:
                    await raw.send(chunk)
                    await trio.lowlevel.checkpoint()
                connected = await wait_for_event(events, trivy.PeerConnected)
                peer = connected.peer  # type: ignore[attr-defined]
                assert peer.name == PEER_NAMES[implementation]
                assert sorted(peer.subscriptions.values()) == ["^hello (.*)", "^multi (a)?(b)?(c)?"]
                assert (await rec.receive()).groups == ("one two",)
                third = "null" if implementation == "ivy-java" else ""
                assert (await multi.receive()).groups == ("a", third, "c")
                assert (await rec.receive()).groups == ("replaced",)
                if implementation == "ivy-java":
                    # its two-line malformed ERROR: answered, connection kept
                    await _skip_handshake(raw)
                    assert await raw.line() == BAD_FORMAT
                    assert await raw.line() == BAD_FORMAT
                    assert me.peers == [peer]
                if implementation == "ivy-c":  # ivy-c ended with BYE
                    await wait_for_event(events, trivy.PeerDisconnected)
                    assert me.peers == []
                await raw.aclose()


async def test_trivy_answers_the_recorder_like_ivy_c_but_keeps_the_connection(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("TRIVY", bus) as me,
            me.events() as events,
            me.direct_messages() as directs,
        ):
            raw = await RawPeer.connect(me)
            await raw.send(RECORDER_HANDSHAKE)
            await _skip_handshake(raw)
            error = await raw.line()
            assert error.startswith(b"3 ")
            assert b"\x02Error compiling '(unclosed', missing )" in error
            peer = (await wait_for_event(events, trivy.PeerConnected)).peer  # type: ignore[attr-defined]
            # the uncompilable subscription does not break the others
            assert await me.send("rec one two") == 1
            assert await raw.line() == b"2 0\x02one two\x03"
            assert await me.send("multi ac") == 1
            assert await raw.line() == b"2 2\x02a\x03\x03c\x03"
            for chunk in RECORDER_TCP:
                await raw.send(chunk)
            assert await raw.line() == b"10 5\x02"  # PONG, same id
            assert await directs.receive() == trivy.DirectMessage(peer, 7, "hi there")
            assert await raw.line() == BAD_FORMAT  # the malformed line
            # ... and the connection is kept: it still answers and delivers
            await raw.send(b"9 6\x02\n")
            assert await raw.line() == b"10 6\x02"
            assert await me.send("rec2 replaced") == 1  # replaced regexp, same id
            assert await raw.line() == b"2 0\x02replaced\x03"
            assert await me.send("multi ab") == 0  # DEL_REGEXP 2 was honoured
            assert await me.send("rec old") == 0
            assert me.peers == [peer]
            await raw.aclose()


async def test_invalid_utf8_passes_through_both_ways(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            sub = me.subscribe(r"^name (.*)")
            raw = await RawPeer.connect(me)
            await raw.handshake("LATIN1", b"1 0\x02^echo (.*)\n")
            await _skip_handshake(raw)
            await raw.send(b"2 %d\x02caf\xe9 cr\xe8me\x03\n" % sub.id)
            (text,) = (await sub.receive()).groups
            assert text.encode("utf-8", "surrogateescape") == b"caf\xe9 cr\xe8me"
            assert await me.send("echo " + text) == 1
            assert await raw.line() == b"2 0\x02caf\xe9 cr\xe8me\x03"
            await raw.aclose()


async def test_a_flooding_peer_is_dropped_and_no_one_else_is(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me, me.events() as events:
            sub = me.subscribe(r"^ok (.*)")
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                await wait_for_subscription(good, "ME", sub.regexp)
                raw = await RawPeer.connect(me)
                await raw.handshake("FLOOD")
                while me.peer("FLOOD") is None:
                    await wait_for_event(events, trivy.PeerConnected)
                assert len(me.peers) == 2
                # garbage that never ends a line: dropped past the line limit
                chunk = b"x" * 65536
                try:
                    for _ in range(64):
                        await raw.send(chunk)
                except trio.BrokenResourceError:
                    pass  # the bus closed the connection while we sent
                left = await wait_for_event(events, trivy.PeerDisconnected)
                assert left.peer.name == "FLOOD"  # type: ignore[attr-defined]
                assert [p.name for p in me.peers] == ["GOOD"]
                assert await good.send("ok still here") == 1
                assert (await sub.receive()).groups == ("still here",)
                await raw.aclose()


async def test_unknown_types_and_garbage_before_start_are_survived(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            sub = me.subscribe(r"^ok (.*)")
            raw = await RawPeer.connect(me)
            await raw.send(b"1 0\x02^too early\n")  # before START_REGEXP
            await _skip_handshake(raw)
            reply = await raw.line()
            assert reply.startswith(b"3 3\x02") and b"START_REGEXP" in reply
            await raw.handshake("ODD")
            await raw.send(b"99 1\x02unknown type\n\n\r\n2 %d\x02fine\x03\n" % sub.id)
            match = await sub.receive()
            assert (match.peer.name, match.groups) == ("ODD", ("fine",))
            await raw.aclose()


async def test_a_bad_announce_is_ignored(bus: str) -> None:
    """Garbage on the UDP port neither crashes discovery nor stops it."""
    import socket

    from trivy import protocol

    address = protocol.parse_bus(bus)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for garbage in (
                    b"",
                    b"hello",
                    b"3 notaport x y",
                    b"\xff\xfe",
                    b"2 1234 old version",
                ):
                    udp.sendto(garbage, ("127.0.0.1", address.port))
            async with trivy.open_ivy_bus("LATER", bus):
                assert (await me.wait_for_peer("LATER")).name == "LATER"


@settings(max_examples=60, deadline=None)
@given(
    handshake_first=st.booleans(),
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from(
                [
                    b"\n",
                    b"2 0\x02",
                    b"\x03",
                    b"6 1\x02X\n",
                    b"5 0\x02\n",
                    b"1 0\x02(\n",
                    b"1 0\x02^ok (.*)\n",
                    b"4 0\x02\n",
                    b"8 0\x02\n",
                    b"0 0\x02\n",
                    b"9 1\x02\n",
                    b"7 1\x02direct\n",
                    b"3 1\x02error\n",
                    b"10 1\x02\n",
                    b"\xff\xfe\n",
                ]
            ),
        ),
        max_size=30,
    ),
)
async def test_any_bytes_from_a_peer_never_hurt_the_bus(
    handshake_first: bool, chunks: list[bytes]
) -> None:
    """Random bytes and pieces of real lines from one raw peer (after a valid
    handshake or not): the bus and its other peers carry on. Its DIEs are
    refused here, so the bus must still be running at the end."""
    from .conftest import free_udp_port

    bus = f"127:{free_udp_port()}"
    checked = False
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus, on_die=lambda peer, num_id: False) as me:
            sub = me.subscribe(r"^ok (.*)")
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                await wait_for_subscription(good, "ME", sub.regexp)
                raw = await RawPeer.connect(me)
                try:
                    if handshake_first:
                        await raw.handshake("FUZZ")
                    for chunk in chunks:
                        await raw.send(chunk)
                except trio.BrokenResourceError:
                    pass  # the bus dropped a flooding peer: allowed
                await raw.aclose()
                assert await good.send("ok still") == 1
                match = await sub.receive()
                while match.peer.name != "GOOD":  # the raw peer may send MSGs too
                    match = await sub.receive()
                assert match.groups == ("still",)
                assert me.running
                checked = True
    assert checked  # the block was not cut short (by an accepted DIE, say)


async def test_regexps_python_cannot_even_compile_get_an_error_not_a_crash(bus: str) -> None:
    """Past re.error: huge repeat counts overflow, deep nesting recurses."""
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            raw = await RawPeer.connect(me)
            await raw.handshake("EVIL")
            await _skip_handshake(raw)
            nested = "(" * 2000 + ")" * 2000
            for sub_id, regexp in enumerate(["a{4294967296}", nested, "(unclosed", "^ok (.*)"]):
                await raw.send(b"1 %d\x02%s\n" % (sub_id, regexp.encode()))
            for _ in range(3):
                error = await raw.line()
                assert error.startswith(b"3 ") and b"Error compiling" in error
            assert me.running
            assert await me.send("ok fine") == 1  # its valid subscription works
            assert await raw.line() == b"2 3\x02fine\x03"
            await raw.aclose()

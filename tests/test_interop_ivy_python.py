"""Interoperability with ivy-python 4.0, the reference Python implementation.

Each test puts a trivy bus and an ivy-python agent (``trivy.testing.ivy_python_agent``,
run in its own process and driven through JSON lines on its stdin/stdout) on a
private loopback bus, and checks what each side sees of the other: messages
and their groups, send counts, direct messages, DIE, PING/PONG, names,
subscriptions, the ready message and BYE.

Synchronisation is always on an observed event, never on a delay: the
``ready``/``connected``/``regexp``... events that the ivy-python process
reports, and the bus events (or channels) on the trivy side.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import pytest
import trio

import trivy
from trivy._matching import MatchMode
from trivy.testing import IvyPythonAgent, ivy_python_agent

PEER_NAME = "PYPEER"
TRIVY_NAME = "TRIVY"
#: Upper bound of every test; each one takes well under a second normally.
TEST_TIMEOUT = 20.0
#: Seconds allowed to the ivy-python process to stop on request.
STOP_TIMEOUT = 3.0

Event = dict[str, Any]
E = TypeVar("E")


@pytest.fixture
def bus_port() -> int:
    """A UDP port free right now: each test gets its own bus."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def trivy_bus(
    port: int, name: str = TRIVY_NAME, **options: Any
) -> AbstractAsyncContextManager[trivy.IvyBus]:
    """``open_ivy_bus`` on the test's loopback bus, listening on loopback only."""
    return trivy.open_ivy_bus(name, f"127:{port}", host="127.0.0.1", **options)


IvyPythonPeer = IvyPythonAgent


def ivy_python_peer(
    port: int,
    name: str = PEER_NAME,
    *,
    refuse_die: bool = False,
    bind: Iterable[str] = (),
    ready_message: str | None = None,
) -> AbstractAsyncContextManager[IvyPythonAgent]:
    """:func:`trivy.testing.ivy_python_agent` on the test's loopback bus."""
    return ivy_python_agent(
        f"127:{port}", name, refuse_die=refuse_die, bind=bind, ready_message=ready_message
    )


async def wait_until(bus: trivy.IvyBus, condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, re-checking at each bus event."""
    async with bus.events() as events:  # opened first: no event is missed
        while not condition():
            await events.receive()


def has_subscription(bus: trivy.IvyBus, regexp: str, name: str = PEER_NAME) -> bool:
    """Whether trivy knows that peer ``name`` subscribed with ``regexp``."""
    peer = bus.peer(name)
    return peer is not None and regexp in peer.subscriptions.values()


async def meet(bus: trivy.IvyBus, peer: IvyPythonPeer) -> trivy.Peer:
    """Wait until trivy and ivy-python both completed the handshake."""
    trivy_peer = await bus.wait_for_peer(PEER_NAME)
    await peer.expect("connected", name=bus.agent_name)
    return trivy_peer


async def ivy_sees(peer: IvyPythonPeer, regexp: str) -> Event:
    """Wait until ivy-python reports that trivy subscribed with ``regexp``."""
    return await peer.expect("regexp", sender=TRIVY_NAME, action="add", regexp=regexp)


async def next_event(events: trivy.EventStream[trivy.BusEvent], kind: type[E]) -> E:
    """The next bus event of type ``kind`` (the others are skipped)."""
    while not isinstance(event := await events.receive(), kind):
        pass
    return event


async def ivy_binds(bus: trivy.IvyBus, peer: IvyPythonPeer, regexp: str) -> int:
    """Bind ``regexp`` in ivy-python; return its id once trivy knows it."""
    bound = await peer.request("bind", "bound", regexp=regexp)
    await wait_until(bus, lambda: has_subscription(bus, regexp))
    return int(bound["id"])


# --------------------------------------------------------------- messages


async def test_ivy_python_receives_trivy_messages(bus_port: int) -> None:
    """trivy's send reaches ivy-python's bindings, one MSG per matching binding.

    The count returned is the number of MSGs: 2 for a text that both
    bindings match, 0 for a text that no one wants.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            await meet(bus, peer)
            exact = await ivy_binds(bus, peer, r"^hello (\w+) (\d+)$")
            loose = await ivy_binds(bus, peer, r"^hello (.*)")

            assert await bus.send("hello world 42") == 2
            first = await peer.expect("msg", id=exact)
            assert first["groups"] == ["world", "42"]
            assert first["sender"] == TRIVY_NAME
            second = await peer.expect("msg", id=loose)
            assert second["groups"] == ["world 42"]

            assert await bus.send("goodbye") == 0
            assert await bus.send("hello there") == 1
            assert (await peer.expect("msg", id=loose))["groups"] == ["there"]
            # TCP keeps the order: nothing else came for the 0-count send.
            assert len(peer.seen("msg")) == 3


async def test_trivy_empty_text_sends_nothing(bus_port: int) -> None:
    """An empty text sends nothing (PROTOCOL.md, like ivy-c), even to an
    ivy-python binding that would match it: count 0, ivy-python gets no MSG."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            await meet(bus, peer)
            binding = await ivy_binds(bus, peer, r"^(.*)$")
            assert await bus.send("") == 0
            assert await bus.send("x") == 1
            # Ordered stream: an MSG for the empty text would come first.
            assert (await peer.expect("msg", id=binding))["groups"] == ["x"]


async def test_optional_group_is_empty_both_ways(bus_port: int) -> None:
    """A group that takes no part in the match is "" on both sides."""
    regexp = r"^opt (a)?(b+)$"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(regexp) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            await ivy_sees(peer, regexp)
            binding = await ivy_binds(bus, peer, regexp)

            assert await bus.send("opt bb") == 1
            received = await peer.expect("msg", id=binding)
            assert received["groups"] == ["", "bb"]

            sent = await peer.request("send", "sent", text="opt bbb")
            assert sent["count"] == 1
            match = await sub.receive()
            assert match.groups == ("", "bbb")

            sent = await peer.request("send", "sent", text="opt abb")
            assert sent["count"] == 1
            assert (await sub.receive()).groups == ("a", "bb")


async def test_trivy_subscription_receives_ivy_python_messages(bus_port: int) -> None:
    """``bus.subscribe`` gets ivy-python's send_msg, with its groups and sender."""
    regexp = r"^hello (\w+) (\d+)$"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(regexp) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            trivy_peer = await meet(bus, peer)
            await ivy_sees(peer, regexp)

            sent = await peer.request("send", "sent", text="hello world 42")
            assert sent["count"] == 1
            match = await sub.receive()
            assert match.groups == ("world", "42")
            assert match.peer.name == PEER_NAME
            assert match.peer is trivy_peer
            assert match.subscription_id == sub.id

            sent = await peer.request("send", "sent", text="hello world")
            assert sent["count"] == 0


async def test_trivy_bind_callback_receives_ivy_python_messages(bus_port: int) -> None:
    """``bus.bind(callback, regexp)`` calls back with the peer and the groups."""
    received_send, received = trio.open_memory_channel[tuple[str, tuple[str, ...]]](10)

    def on_button(peer: trivy.Peer, *groups: str) -> None:
        received_send.send_nowait((peer.name, groups))

    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            await meet(bus, peer)
            bind_id = bus.bind(on_button, r"^btn (\d+) (\w+)")
            added = await peer.expect("regexp", sender=TRIVY_NAME, action="add")
            assert (added["id"], added["regexp"]) == (bind_id, r"^btn (\d+) (\w+)")

            sent = await peer.request("send", "sent", text="btn 12 down")
            assert sent["count"] == 1
            assert await received.receive() == (PEER_NAME, ("12", "down"))


async def test_regexp_without_groups_both_ways(bus_port: int) -> None:
    """A regexp without groups: the MSG carries no parameter, and each side
    calls back with no group at all (not one empty group)."""
    regexp = r"^tick$"
    calls_send, calls = trio.open_memory_channel[tuple[str, ...]](10)

    def on_tick(peer: trivy.Peer, *groups: str) -> None:
        calls_send.send_nowait(groups)

    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            await meet(bus, peer)
            bus.bind(on_tick, regexp)
            await ivy_sees(peer, regexp)
            binding = await ivy_binds(bus, peer, regexp)
            assert await bus.send("tick") == 1
            assert (await peer.expect("msg", id=binding))["groups"] == []
            assert (await peer.request("send", "sent", text="tick"))["count"] == 1
            assert await calls.receive() == ()


# ---------------------------------------------------------- direct messages


async def test_direct_messages_both_ways(bus_port: int) -> None:
    """DIRECT_MSG: trivy → ivy-python's direct callback; ivy-python → trivy's
    ``direct_messages()`` stream, with the numeric id and the text."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            async with bus.direct_messages() as directs:
                bus.send_direct(trivy_peer, 7, "hi there")
                received = await peer.expect("direct")
                assert received == {
                    "event": "direct",
                    "sender": TRIVY_NAME,
                    "num_id": 7,
                    "text": "hi there",
                }

                sent = await peer.request(
                    "direct", "direct_sent", to=TRIVY_NAME, num_id=42, text="back"
                )
                assert sent["ok"] is True
                message = await directs.receive()
                assert message.peer is trivy_peer
                assert (message.num_id, message.text) == (42, "back")


# ------------------------------------------------------------------- DIE


async def test_trivy_die_stops_ivy_python(bus_port: int) -> None:
    """``bus.send_die(peer)``: ivy-python's die callback runs, its server stops
    (BYE: trivy sees it leave) and the process exits with code 0."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            async with bus.events() as events:
                bus.send_die(trivy_peer)
                die = await peer.expect("die")
                assert (die["sender"], die["num_id"], die["refused"]) == (
                    TRIVY_NAME,
                    0,
                    False,
                )
                await peer.expect("stopped")
                assert await peer.process.wait() == 0
                event = await next_event(events, trivy.PeerDisconnected)
                assert event.peer is trivy_peer
            assert bus.peers == []


async def test_ivy_python_refusing_die_keeps_running(bus_port: int) -> None:
    """An ivy-python agent whose die callback returns IVY_SHOULD_NOT_DIE stays
    on the bus: a message still gets through afterwards."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            ivy_python_peer(bus_port, refuse_die=True) as peer,
        ):
            trivy_peer = await meet(bus, peer)
            binding = await ivy_binds(bus, peer, r"^still (\w+)")
            bus.send_die(trivy_peer)
            die = await peer.expect("die")
            assert die["refused"] is True

            assert await bus.send("still alive") == 1
            assert (await peer.expect("msg", id=binding))["groups"] == ["alive"]
            assert peer.process.returncode is None
            assert bus.peer(PEER_NAME) is trivy_peer


async def test_ivy_python_die_stops_trivy(bus_port: int) -> None:
    """ivy-python's DIE stops trivy by default: the body of the ``async with``
    block is cancelled, the block exits without an exception, and ivy-python
    sees trivy leave."""
    body_finished = False
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(bus_port) as peer:
            async with trivy_bus(bus_port) as bus:
                await meet(bus, peer)
                await peer.command("die", to=TRIVY_NAME)
                await trio.sleep_forever()
                body_finished = True  # pragma: no cover
            assert not body_finished
            assert not bus.running
            assert (await peer.expect("die_sent"))["count"] == 1
            await peer.expect("disconnected", name=TRIVY_NAME)
            assert (await peer.request("clients", "clients"))["clients"] == []


async def test_trivy_refusing_die_keeps_working(bus_port: int) -> None:
    """With ``on_die`` returning False, trivy stays: a DieReceived(refused=True)
    event is emitted and messages still flow both ways."""
    calls: list[tuple[str, int]] = []

    def refuse(peer: trivy.Peer, num_id: int) -> bool:
        calls.append((peer.name, num_id))
        return False

    regexp = r"^after die (\w+)"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port, on_die=refuse) as bus,
            bus.subscribe(regexp) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            trivy_peer = await meet(bus, peer)
            await ivy_sees(peer, regexp)
            async with bus.events() as events:
                sent = await peer.request("die", "die_sent", to=TRIVY_NAME)
                assert sent["count"] == 1
                event = await next_event(events, trivy.DieReceived)
            assert event == trivy.DieReceived(trivy_peer, 0, True)
            assert calls == [(PEER_NAME, 0)]
            assert bus.running

            sent = await peer.request("send", "sent", text="after die ok")
            assert sent["count"] == 1
            assert (await sub.receive()).groups == ("ok",)
            binding = await ivy_binds(bus, peer, r"^reply (\w+)")
            assert await bus.send("reply ok") == 1
            assert (await peer.expect("msg", id=binding))["groups"] == ["ok"]


# ------------------------------------------------------------------ PING


async def test_ping_both_ways(bus_port: int) -> None:
    """``bus.ping`` gets ivy-python's PONG (a positive round trip), and
    ivy-python's send_ping gets trivy's PONG (its pong callback runs)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            with trio.fail_after(5):
                round_trip = await bus.ping(trivy_peer)
            assert isinstance(round_trip, float)
            assert 0 < round_trip < 5

            sent = await peer.request("ping", "ping_sent", to=TRIVY_NAME)
            assert sent["count"] == 1
            pong = await peer.expect("pong")
            assert pong["sender"] == TRIVY_NAME
            assert 0 < pong["delta"] < 5


# ------------------------------------------------- names and subscriptions


async def test_names_and_subscriptions_visible_both_ways(bus_port: int) -> None:
    """Each side knows the other's name, port and subscriptions, with the
    other's own subscription ids (initial ones and later ones alike)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(r"^trivy one (.*)") as one,
            ivy_python_peer(bus_port, bind=[r"^py one (.*)"]) as peer,
        ):
            trivy_peer = await meet(bus, peer)
            py_one = (await peer.expect("bound"))["id"]
            two = bus.bind(lambda *_: None, r"^trivy two$")
            await peer.expect("regexp", sender=TRIVY_NAME, action="add", id=two)
            py_two = await ivy_binds(bus, peer, r"^py two$")

            assert [p.name for p in bus.peers] == [PEER_NAME]
            assert trivy_peer.port == peer.ready["port"]
            assert trivy_peer.subscriptions == {
                py_one: r"^py one (.*)",
                py_two: r"^py two$",
            }
            clients = (await peer.request("clients", "clients"))["clients"]
            assert clients == [
                {
                    "name": TRIVY_NAME,
                    "bindings": sorted([[one.id, r"^trivy one (.*)"], [two, r"^trivy two$"]]),
                }
            ]


async def test_trivy_unsubscribe_stops_ivy_python_delivery(bus_port: int) -> None:
    """Closing a Subscription and ``bus.unbind(id)`` send DEL_REGEXP: ivy-python
    removes them, and its send count for those texts drops to 0."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            await meet(bus, peer)
            bind_id = bus.bind(lambda *_: None, r"^bound (\w+)")
            async with bus.subscribe(r"^channel (\w+)") as sub:
                for regexp in (r"^bound (\w+)", r"^channel (\w+)"):
                    await ivy_sees(peer, regexp)
                sent = await peer.request("send", "sent", text="channel x")
                assert sent["count"] == 1
                assert (await sub.receive()).groups == ("x",)
            removed = await peer.expect("regexp", sender=TRIVY_NAME, action="remove")
            assert (removed["id"], removed["regexp"]) == (sub.id, r"^channel (\w+)")
            assert (await peer.request("send", "sent", text="channel x"))["count"] == 0

            assert (await peer.request("send", "sent", text="bound y"))["count"] == 1
            assert bus.unbind(bind_id) == r"^bound (\w+)"
            removed = await peer.expect("regexp", sender=TRIVY_NAME, action="remove")
            assert (removed["id"], removed["regexp"]) == (bind_id, r"^bound (\w+)")
            assert (await peer.request("send", "sent", text="bound y"))["count"] == 0
            clients = (await peer.request("clients", "clients"))["clients"]
            assert clients == [{"name": TRIVY_NAME, "bindings": []}]


async def test_ivy_python_unbind_stops_trivy_delivery(bus_port: int) -> None:
    """ivy-python's unbind_msg reaches trivy (SubscriptionRemoved) and trivy's
    send count for that text drops to 0."""
    regexp = r"^going (\w+)"
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            binding = await ivy_binds(bus, peer, regexp)
            assert await bus.send("going once") == 1
            assert (await peer.expect("msg", id=binding))["groups"] == ["once"]

            async with bus.events() as events:
                await peer.request("unbind", "unbound", id=binding)
                event = await next_event(events, trivy.SubscriptionRemoved)
            assert event == trivy.SubscriptionRemoved(trivy_peer, binding, regexp)
            assert trivy_peer.subscriptions == {}
            assert await bus.send("going twice") == 0


# --------------------------------------------------------------- anchoring


async def test_ivy_python_matches_only_at_start(bus_port: int) -> None:
    """ivy-python applies peers' regexps with ``re.match`` (anchored at the
    start of the text): for trivy's unanchored regexp ``unanchored (\\w+)`` it
    does not deliver ``this is unanchored text`` (count 0), only texts that
    begin with a match. trivy cannot change that: the sender matches."""
    regexp = r"unanchored (\w+)"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(regexp) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            await ivy_sees(peer, regexp)
            sent = await peer.request("send", "sent", text="this is unanchored text")
            assert sent["count"] == 0
            sent = await peer.request("send", "sent", text="unanchored words")
            assert sent["count"] == 1
            # Ordered stream: had the first text been sent, it would come first.
            assert (await sub.receive()).groups == ("words",)


@pytest.mark.parametrize(
    ("match_mode", "expected"), [("search", 1), ("match", 0), ("fullmatch", 0)]
)
async def test_trivy_match_mode_for_ivy_python_regexps(
    bus_port: int, match_mode: MatchMode, expected: int
) -> None:
    """trivy searches peers' regexps anywhere by default (like ivy-c): for
    ivy-python's ``unanchored (\\w+)`` it delivers ``this is unanchored text``
    (count 1, ivy-python gets ``text``), where ivy-python itself would not.
    ``match_mode="match"`` emulates ivy-python (and ``"fullmatch"`` ivy-java):
    count 0. Texts that start with a match go through in every mode."""
    regexp = r"unanchored (\w+)"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port, match_mode=match_mode) as bus,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            binding = await ivy_binds(bus, peer, regexp)
            assert bus.match_mode == match_mode
            assert await bus.send("this is unanchored text") == expected
            assert await bus.send("unanchored words") == 1
            if expected:
                assert (await peer.expect("msg", id=binding))["groups"] == ["text"]
            assert (await peer.expect("msg", id=binding))["groups"] == ["words"]
            assert len(peer.seen("msg")) == expected + 1


# ------------------------------------------------ ready message, BYE, names


@pytest.mark.parametrize("trivy_first", [True, False], ids=["trivy-first", "py-first"])
async def test_ready_message_reaches_ivy_python_once(bus_port: int, trivy_first: bool) -> None:
    """``ready_message="TRIVY READY"`` reaches ivy-python's ``^TRIVY (.*)``
    binding exactly once when they connect, whichever agent started first
    (so whichever side opened the TCP connection)."""
    regexp = r"^TRIVY (.*)"
    with trio.fail_after(TEST_TIMEOUT):
        if trivy_first:
            async with (
                trivy_bus(bus_port, ready_message="TRIVY READY") as bus,
                ivy_python_peer(bus_port, bind=[regexp]) as peer,
            ):
                await _check_ready_message(bus, peer)
        else:
            async with (
                ivy_python_peer(bus_port, bind=[regexp]) as peer,
                trivy_bus(bus_port, ready_message="TRIVY READY") as bus,
            ):
                await _check_ready_message(bus, peer)


async def _check_ready_message(bus: trivy.IvyBus, peer: IvyPythonPeer) -> None:
    binding = (await peer.expect("bound"))["id"]
    await meet(bus, peer)
    ready = await peer.expect("msg", id=binding)
    assert (ready["groups"], ready["sender"]) == (["READY"], TRIVY_NAME)
    # A later message on the same stream: any second READY would precede it.
    assert await bus.send("TRIVY SYNC") == 1
    assert (await peer.expect("msg", id=binding))["groups"] == ["SYNC"]
    assert [e["groups"] for e in peer.seen("msg")] == [["READY"], ["SYNC"]]


async def test_ivy_python_ready_message_reaches_trivy(bus_port: int) -> None:
    """ivy-python's own ready_msg reaches trivy's matching subscription once."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(r"^PY (\w+)") as sub,
            ivy_python_peer(bus_port, ready_message="PY READY") as peer,
        ):
            trivy_peer = await meet(bus, peer)
            match = await sub.receive()
            assert (match.groups, match.peer) == (("READY",), trivy_peer)
            sent = await peer.request("send", "sent", text="PY SYNC")
            assert sent["count"] == 1
            assert (await sub.receive()).groups == ("SYNC",)


async def test_trivy_exit_says_bye_to_ivy_python(bus_port: int) -> None:
    """Leaving the ``async with`` block sends BYE: ivy-python reports the
    disconnection and forgets trivy and its subscriptions."""
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(bus_port) as peer:
            async with trivy_bus(bus_port) as bus:
                bus.bind(lambda *_: None, r"^bye (.*)")
                await meet(bus, peer)
                await peer.expect("regexp", sender=TRIVY_NAME, action="add")
            await peer.expect("disconnected", name=TRIVY_NAME)
            assert (await peer.request("clients", "clients"))["clients"] == []
            assert (await peer.request("send", "sent", text="bye now"))["count"] == 0


async def test_ivy_python_stop_disconnects_from_trivy(bus_port: int) -> None:
    """ivy-python's stop() (BYE) makes trivy drop the peer: PeerDisconnected,
    no more peers, and its subscriptions no longer count."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            await ivy_binds(bus, peer, r"^leaving (.*)")
            async with bus.events() as events:
                await peer.request("stop", "stopped")
                event = await next_event(events, trivy.PeerDisconnected)
            assert event.peer is trivy_peer
            assert await peer.process.wait() == 0
            assert bus.peers == []
            assert await bus.send("leaving now") == 0


# ------------------------------------------------------- text and volume


async def test_utf8_text_both_ways(bus_port: int) -> None:
    """Non-ASCII text travels as UTF-8 and comes out intact on both sides."""
    regexp = r"^utf (.*)"
    text = "héllo wörld ✓ 日本"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(regexp) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            await ivy_sees(peer, regexp)
            binding = await ivy_binds(bus, peer, regexp)
            assert await bus.send(f"utf {text}") == 1
            assert (await peer.expect("msg", id=binding))["groups"] == [text]
            sent = await peer.request("send", "sent", text=f"utf {text}")
            assert sent["count"] == 1
            assert (await sub.receive()).groups == (text,)


async def test_bursts_arrive_complete_and_in_order(bus_port: int) -> None:
    """500 messages each way, sent back to back: none lost, none reordered.

    trivy coalesces its MSGs into few writes, so ivy-python reads many lines
    (and lines cut across its 1024-byte reads) at once; ivy-python writes
    each MSG on its own.
    """
    count = 500
    regexp = r"^seq (\d+) (x*)$"
    padding = "x" * 37  # lines of uneven length, cut anywhere by the reads
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            bus.subscribe(regexp, max_buffer=count) as sub,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            await ivy_sees(peer, regexp)
            binding = await ivy_binds(bus, peer, regexp)
            for number in range(count):
                assert await bus.send(f"seq {number} {padding}") == 1
            for number in range(count):
                received = await peer.expect("msg", id=binding)
                assert received["groups"] == [str(number), padding]

            for number in range(count):
                await peer.command("send", text=f"seq {number} {padding}")
            for number in range(count):
                assert (await sub.receive()).groups == (str(number), padding)
                assert (await peer.expect("sent"))["count"] == 1


async def test_agent_names_with_spaces(bus_port: int) -> None:
    """Agent names with spaces (allowed by the UDP announce and START_REGEXP)
    are seen whole on both sides, and direct messages find them by name.

    ivy-python builds its agent id from its name, so with spaces in the name
    it misreads its own announce and connects to itself: that connection
    (ivy-python's, not trivy's business) is left out of its client list here.
    """
    trivy_name, py_name = "TRIVY WITH SPACES", "PY PEER 2"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port, name=trivy_name) as bus,
            ivy_python_peer(bus_port, name=py_name) as peer,
        ):
            trivy_peer = await bus.wait_for_peer(py_name)
            await peer.expect("connected", name=trivy_name)
            assert trivy_peer.name == py_name
            assert [p.name for p in bus.peers] == [py_name]
            clients = (await peer.request("clients", "clients"))["clients"]
            assert [c["name"] for c in clients if c["name"] != py_name] == [trivy_name]
            sent = await peer.request("direct", "direct_sent", to=trivy_name, num_id=1, text="ok")
            assert sent["ok"] is True
            bus.send_direct(trivy_peer, 2, "ok too")
            received = await peer.expect("direct", sender=trivy_name)
            assert (received["num_id"], received["text"]) == (2, "ok too")


#: How long trivy is given to connect to an announced agent in the test
#: below; on loopback it takes milliseconds.
ANNOUNCED_PEER_TIMEOUT = 2.0


async def test_trivy_connects_to_ivy_python_agents_sharing_first_word(
    bus_port: int,
) -> None:
    """trivy connects to every ivy-python agent that announces itself after
    it, even when their names start with the same word.

    ivy-python's agent id is its name followed by digits, so the ids in the
    announces of ``PY A`` and ``PY B`` both read ``PY`` (the announce is
    split on spaces). PROTOCOL.md only says to ignore our own id: ivy-python
    itself (which matches clients by address) connects to both.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port) as bus, ivy_python_peer(bus_port, name="PY A"):
            assert (await bus.wait_for_peer("PY A")).name == "PY A"
            async with ivy_python_peer(bus_port, name="PY B"):
                with trio.move_on_after(ANNOUNCED_PEER_TIMEOUT):
                    await bus.wait_for_peer("PY B")
                assert [p.name for p in bus.peers] == ["PY A", "PY B"]


async def test_ivy_python_answers_the_heartbeat_and_is_never_dropped(bus_port: int) -> None:
    """With a fast heartbeat and ``drop_unresponsive`` on, an idle ivy-python
    peer answers every PING and stays connected, unreported."""
    options: dict[str, Any] = {
        "heartbeat_interval": 0.25,
        "unresponsive_timeout": 2.0,
        "drop_unresponsive": True,
    }
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port, **options) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            async with bus.events() as events:
                session = bus._peers.session_of(trivy_peer)
                first_ping = session.pings.sent
                await trio.sleep(3)  # the time observed: twelve heartbeat intervals
                assert session.pings.sent - first_ping >= 4  # PINGs went out
                assert session._conn._pings_sent <= {session.pings.sent}  # one expected at most
                assert bus.peers == [trivy_peer]
                seen = []
                while True:
                    try:
                        seen.append(events.receive_nowait())
                    except trio.WouldBlock:
                        break
                assert not [e for e in seen if not isinstance(e, trivy.PeerConnected)]


async def test_a_busy_ivy_python_peer_is_not_dropped(bus_port: int) -> None:
    """ivy-python's callback blocks the thread serving trivy for 2 s: trivy's
    PINGs go unanswered meanwhile, and yet, with ``drop_unresponsive`` on and
    a 5 s ``unresponsive_timeout``, the peer is neither reported nor dropped."""
    options: dict[str, Any] = {
        "heartbeat_interval": 0.25,
        "unresponsive_timeout": 5.0,
        "drop_unresponsive": True,
    }
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy_bus(bus_port, **options) as bus, ivy_python_peer(bus_port) as peer:
            trivy_peer = await meet(bus, peer)
            await peer.request("bind", "bound", regexp="^work (.*)", busy=2.0)
            await wait_until(bus, lambda: has_subscription(bus, "^work (.*)"))
            async with bus.events() as events:
                session = bus._peers.session_of(trivy_peer)
                assert await bus.send("work hard") == 1
                busy_since = trio.current_time()
                await peer.expect("msg", groups=["hard"])  # two seconds later
                assert trio.current_time() - busy_since >= 2.0
                assert session.activity > 0 and session.pings.sent > 4  # PINGs went out
                with trio.fail_after(5):
                    assert await bus.ping(trivy_peer) > 0  # and it answers again
                assert bus.peers == [trivy_peer]
                seen = []
                while True:
                    try:
                        seen.append(type(events.receive_nowait()))
                    except trio.WouldBlock:
                        break
                assert trivy.PeerUnresponsive not in seen
                assert trivy.PeerDisconnected not in seen


async def test_message_classes_ignore_ivy_python_regexps_outside_them(bus_port: int) -> None:
    """ivy-c's filter against a real peer: with classes TRACK and STATUS, its
    ``^OTHER`` regexp is not used, its ``^TRA`` and unanchored ones are."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy_bus(bus_port, message_classes=["TRACK", "STATUS"]) as bus,
            ivy_python_peer(bus_port) as peer,
        ):
            await meet(bus, peer)
            other = await ivy_binds(bus, peer, r"^OTHER (.*)")
            prefix = await ivy_binds(bus, peer, r"^TRA(\w*) (.*)")
            loose = await ivy_binds(bus, peer, r"(\d+)$")
            assert await bus.send("OTHER thing") == 0  # its regexp cost nothing
            assert await bus.send("TRACK 42") == 2
            assert (await peer.expect("msg", id=prefix))["groups"] == ["CK", "42"]
            assert (await peer.expect("msg", id=loose))["groups"] == ["42"]
            assert await bus.send("OTHER 7") == 1  # the unanchored regexp only
            assert (await peer.expect("msg", id=loose))["groups"] == ["7"]
            assert peer.seen("msg", id=other) == []

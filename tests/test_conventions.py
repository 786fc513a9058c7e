"""trio's conventions, exactly: cancel points, EndOfChannel, plain OSError, callbacks.

Also the layering rule: the sans-IO modules import no I/O, no clock, no
randomness and no environment.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import trivy
from trivy._routing import CANCEL_CHECK_EVERY, SENDS_PER_CHECKPOINT
from trivy.testing import wait_for_subscription

TIMEOUT = 10
TRIVY = Path(trivy.__file__).parent


async def test_a_send_loop_cancelled_by_its_own_task_stops_within_16_calls(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                sent = 0
                with trio.CancelScope() as scope:
                    for i in range(5000):
                        if i == 10:
                            scope.cancel()
                        await b.send("x")
                        sent += 1
                assert scope.cancelled_caught
                assert 10 <= sent < 10 + CANCEL_CHECK_EVERY  # not up to 1023 sends later
                # a call that raised Cancelled sent nothing
                for _ in range(sent):
                    await sub.receive()
                with trio.move_on_after(0.2):
                    await sub.receive()
                    pytest.fail("a cancelled send was delivered")
                # the first send after a send yielded checks at once
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await b.send("x")
                assert scope.cancelled_caught


async def test_a_send_loop_lets_other_tasks_run_once_per_1024_calls(bus: str) -> None:
    rounds = 4
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a, trivy.open_ivy_bus("B", bus) as b:
            a.bind(lambda *_: None, "^x")  # (a callback: no buffer to wait on)
            await wait_for_subscription(b, "A", "^x")
            turns = 0

            async def bystander() -> None:
                nonlocal turns
                while True:
                    await trio.lowlevel.checkpoint()
                    turns += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(bystander)
                await trio.lowlevel.checkpoint()  # (from now, it runs at each yield)
                turns = 0
                for _ in range(rounds * SENDS_PER_CHECKPOINT):
                    await b.send("x")
                nursery.cancel_scope.cancel()
            assert rounds - 1 <= turns <= rounds + 1


async def test_a_deadline_stops_a_send_loop_at_its_next_checkpoint(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                with trio.move_on_after(0.05) as scope:
                    while True:
                        await b.send("x")  # never waits: the reader keeps up
                assert scope.cancelled_caught


async def test_a_consumer_cancelled_by_its_own_task_stops_within_16_items(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
            async with trivy.open_ivy_bus("B", bus) as b:
                await wait_for_subscription(b, "A", sub.regexp)
                for _ in range(200):
                    await b.send("x")
                while len(sub) < 200:
                    await trio.testing.wait_all_tasks_blocked()
                for receive in (sub.receive, sub.__anext__):
                    before = len(sub)
                    taken = 0
                    with trio.CancelScope() as scope:
                        while True:
                            if taken == 3:
                                scope.cancel()
                            await receive()
                            taken += 1
                    assert scope.cancelled_caught
                    assert 3 <= taken < 3 + CANCEL_CHECK_EVERY
                    assert len(sub) == before - taken  # the cancelled call took nothing
                # after a cancelled call, the next one checks again
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await sub.receive()
                assert scope.cancelled_caught


async def test_a_cancel_made_while_a_consumer_waited_is_seen_at_its_next_call(
    bus: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
            taken = 0
            scope = trio.CancelScope()

            async def consume() -> None:
                nonlocal taken
                with scope:
                    while True:
                        await sub.receive()
                        taken += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                peer = trivy.Peer("B", "127.0.0.1", 1)
                for _ in range(40):  # what a peer's reader does, then a cancel
                    sub._put_nowait(trivy.Match(peer, (), sub.id))
                scope.cancel()
            assert taken == 1  # the item it was woken for, then the cancel


async def test_a_loop_of_failing_sends_still_sees_its_cancel(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            calls = 0
            with trio.CancelScope() as scope:
                scope.cancel()
                while calls < 100_000:
                    calls += 1
                    with pytest.raises(ValueError):
                        await a.send("two\nlines")
            assert scope.cancelled_caught and calls <= CANCEL_CHECK_EVERY


async def test_unbind_ends_a_subscription_with_end_of_channel(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x (.*)")
            async with trivy.open_ivy_bus("B", bus) as b:
                peer_a = await wait_for_subscription(b, "A", sub.regexp)
                await b.send("x 1")
                while not len(sub):
                    await trio.testing.wait_all_tasks_blocked()
                assert a.unbind(sub.id) == "^x (.*)"
                got = [match.groups async for match in sub]  # ends, no exception
                assert got == [("1",)]  # what was buffered is still read
                with pytest.raises(trio.EndOfChannel):
                    await sub.receive()
                async with b.events() as events:
                    while sub.id in peer_a.subscriptions:
                        await events.receive()  # the DEL_REGEXP reached B
                await sub.aclose()  # closing afterwards is harmless


async def test_a_udp_port_that_cannot_be_had_raises_a_plain_oserror() -> None:
    # A socket bound without SO_REUSEADDR keeps the port to itself.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taker:
        taker.bind(("0.0.0.0", 0))
        port = taker.getsockname()[1]
        with pytest.raises(OSError, match=f"UDP port {port}") as info:
            async with trivy.open_ivy_bus("A", f"127.255.255.255:{port}"):
                pytest.fail("the bus opened on a taken port")  # pragma: no cover
    assert type(info.value) is OSError  # not an exception group


async def test_callbacks_returning_awaitables_are_awaited(bus: str) -> None:
    """bind, timers and on_die: call it; if the result is awaitable, await it."""
    seen: list[str] = []
    died = trio.Event()

    async def note(what: str) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(what)
        if what == "die":
            died.set()

    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, on_die=lambda peer, num: note("die")) as a:
            a.bind(lambda peer, word: note(f"bound {word}"), "^say (.*)")
            timer = a.start_timer(lambda: note("tick"), 0, count=1)
            async with trivy.open_ivy_bus("B", bus) as b:
                peer_a = await wait_for_subscription(b, "A", "^say (.*)")
                await b.send("say hi")
                await timer.wait_finished()
                b.send_die(peer_a)
                await died.wait()
    assert sorted(seen) == ["bound hi", "die", "tick"]


async def test_peer_subscriptions_is_a_read_only_view(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            sub = a.subscribe("^x")
            async with trivy.open_ivy_bus("B", bus) as b:
                peer_a = await wait_for_subscription(b, "A", sub.regexp)
                with pytest.raises(TypeError):
                    peer_a.subscriptions[99] = "^stale"  # type: ignore[index]
                with pytest.raises(AttributeError):
                    peer_a.subscriptions.clear()  # type: ignore[attr-defined]
                with pytest.raises(attrs.exceptions.FrozenAttributeError):
                    peer_a.subscriptions = {}  # the view cannot be swapped either
                assert await b.send("x") == 1  # routing is intact
                second = a.subscribe("^y")
                async with b.events() as events:
                    while second.id not in peer_a.subscriptions:
                        await events.receive()  # the view is live
                assert peer_a.subscriptions == {sub.id: "^x", second.id: "^y"}


#: The sans-IO layer, and what it may not import.
SANS_IO = (
    "protocol.py",
    "_connection.py",
    "_send_buffer.py",
    "_msg_bytes.py",
    "_lines.py",
    "_peer_regexps.py",
    "_posix_classes.py",
    "_regexp_guard.py",
    "_regexp_cost.py",
    "_regexp_chars.py",
    "_protocol_events.py",
    "_matching.py",
    "_errors.py",
)
IO_MODULES = {"trio", "socket", "os", "random", "time", "threading", "select", "selectors"}


@pytest.mark.parametrize("module", SANS_IO)
def test_the_sans_io_layer_imports_no_io(module: str) -> None:
    tree = ast.parse((TRIVY / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
            elif node.level == 1 and node.module:
                assert f"{node.module}.py" in SANS_IO, f"{module} imports trivy.{node.module}"
    assert not imported & IO_MODULES


def _private_trio_names(tree: ast.AST) -> list[str]:
    """``trio._x`` in an import or an attribute chain rooted at ``trio``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            parts = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name):
                continue
            names = [".".join([value.id, *reversed(parts)])]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "trio" and any(part.startswith("_") for part in parts[1:]):
                found.append(name)
    return found


def test_no_module_uses_a_private_trio_name() -> None:
    """trio's internals change between releases: only its public API is used."""
    used = {
        str(path.relative_to(TRIVY)): names
        for path in sorted(TRIVY.rglob("*.py"))
        if (names := _private_trio_names(ast.parse(path.read_text())))
    }
    assert used == {}
    # the check itself sees both spellings
    sample = "from trio._core._run import X\nimport trio\ntrio.lowlevel._x.y = 1\n"
    found = _private_trio_names(ast.parse(sample))
    assert {"trio._core._run.X", "trio.lowlevel._x.y"} <= set(found)


#: Small modules with one job (the anchors: h11, wsproto, trio).
MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(TRIVY)): lines
        for path in TRIVY.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}

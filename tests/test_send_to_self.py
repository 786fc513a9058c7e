"""send_to_self (ivy-java's sendToSelf): our texts reach our own subscriptions too."""

from __future__ import annotations

import pytest
import trio

import trivy
from trivy.testing import wait_for_subscription

TIMEOUT = 10


async def test_our_subscriptions_get_our_texts_in_order_as_peers_do(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_to_self=True) as a,
            trivy.open_ivy_bus("B", bus) as b,
        ):
            ours = a.subscribe(r"^n (\d+)")
            theirs = b.subscribe(r"^n (\d+)")
            await wait_for_subscription(a, "B", r"^n (\d+)")
            for i in range(200):
                assert await a.send(f"n {i}") == 2  # B's subscription, and ours
            assert a.send_nowait("n 200") == 2
            mine = [await ours.receive() for _ in range(201)]
            received = [await theirs.receive() for _ in range(201)]
            assert [m.groups for m in mine] == [(str(i),) for i in range(201)]
            assert [m.groups for m in received] == [(str(i),) for i in range(201)]
            me = mine[0].peer
            assert (me.name, me.port, me.agent_id) == ("A", a.port, a.agent_id)
            assert mine[0].subscription_id == ours.id
            # a text for one peer stays with that peer
            assert await a.send("n 999", to=a.peer("B")) == 1
            assert (await theirs.receive()).groups == ("999",)
            with pytest.raises(trio.WouldBlock):
                ours.receive_nowait()


async def test_callbacks_sync_and_async_and_match_mode(bus: str) -> None:
    seen: list[tuple[str, tuple[str, ...]]] = []
    done = trio.Event()

    def sync_callback(peer: trivy.Peer, *groups: str) -> None:
        seen.append(("sync", groups))

    async def async_callback(peer: trivy.Peer, *groups: str) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(("async", groups))
        if groups == ("2",):
            done.set()

    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True, match_mode="match") as a:
            a.bind(sync_callback, r"x(\d)")
            a.bind(async_callback, r"^x(\d)")
            assert await a.send("x1") == 2
            assert await a.send("no x3") == 0  # match mode: anchored at the start
            assert a.send_nowait("x2") == 2
            await done.wait()
            expected = [("sync", ("1",)), ("async", ("1",)), ("sync", ("2",)), ("async", ("2",))]
            assert seen == expected


async def test_off_by_default(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            ours = a.subscribe("^(.*)")
            assert await a.send("hello") == 0
            with pytest.raises(trio.WouldBlock):
                ours.receive_nowait()


async def test_texts_sent_by_our_callbacks_keep_their_order_and_loops_end(bus: str) -> None:
    seen: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True) as a:

            async def answer(peer: trivy.Peer, n: str) -> None:
                if n == "1":
                    await a.send("x 2")  # sent while "x 1" is being delivered

            a.bind(answer, r"^x (\d)")
            a.bind(lambda peer, n: seen.append(n), r"^x (\d)")
            assert await a.send("x 1") == 2
            assert seen == ["1", "2"]  # not ["2", "1"]

            echoes: list[str] = []

            async def echo(peer: trivy.Peer, text: str) -> None:
                echoes.append(text)
                await a.send(f"echo {text}")  # always matches itself again

            a.bind(echo, r"^echo (e.*)")
            await a.send("echo e")
            assert 9_000 < len(echoes) <= 10_001  # bounded, not for ever
            assert await a.send("") == 0


async def test_java_newlines_are_matched_as_peers_match_them(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True, java_newlines=True) as a:
            lines = a.subscribe(r"^a(.)b$")
            assert await a.send("a\nb") == 1
            assert (await lines.receive()).groups == ("\n",)

"""send_to_self (ivy-java's sendToSelf): our texts reach our own subscriptions too."""

from __future__ import annotations

import time

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


async def test_texts_sent_by_our_callbacks_keep_their_order(bus: str) -> None:
    seen: list[str] = []
    done = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True) as a:

            async def answer(peer: trivy.Peer, n: str) -> None:
                if n == "1":
                    await a.send("x 2")  # sent while "x 1" is being delivered
                elif n == "2":  # from a task of the callback's: no deadlock
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(a.send, "x 3")

            def note(peer: trivy.Peer, n: str) -> None:
                seen.append(n)
                if n == "3":
                    done.set()

            a.bind(answer, r"^x (\d)")
            a.bind(note, r"^x (\d)")
            assert await a.send("x 1") == 2
            await done.wait()
            assert seen == ["1", "2", "3"]  # not ["2", "1", ...]
            assert await a.send("") == 0


async def test_our_copy_and_the_peers_keep_one_order_across_tasks(bus: str) -> None:
    count = 300
    with trio.fail_after(30):
        async with (
            trivy.open_ivy_bus("A", bus, send_to_self=True) as a,
            trivy.open_ivy_bus("B", bus) as b,
        ):
            ours = a.subscribe(r"^(\w) (\d+)$", max_buffer=1)  # full at once: senders wait
            theirs = b.subscribe(r"^(\w) (\d+)$")
            await wait_for_subscription(a, "B", theirs.regexp)

            async def sender(name: str, nowait: bool) -> None:
                for i in range(count):
                    if nowait and i % 3 == 0:
                        a.send_nowait(f"{name} {i}")  # (dropped for us when 1000 wait)
                    else:
                        await a.send(f"{name} {i}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, "p", False)
                nursery.start_soon(sender, "q", True)
                mine = [(await ours.receive()).groups for _ in range(2 * count)]
            got = [(await theirs.receive()).groups for _ in range(2 * count)]
            assert mine == got  # one order for the peers and for us


async def test_a_cancelled_send_to_ourselves_sent_nothing(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, send_to_self=True) as a,
            trivy.open_ivy_bus("B", bus) as b,
        ):
            ours = a.subscribe(r"^x (\d)")
            theirs = b.subscribe(r"^x (\d)")
            await wait_for_subscription(a, "B", theirs.regexp)
            assert await a.send("x 0") == 2
            sent = 0
            with trio.CancelScope() as scope:
                scope.cancel()
                while True:  # a cancel of our own lands within 16 calls
                    await a.send("x 1")
                    sent += 1
            assert scope.cancelled_caught and sent < 16
            assert await a.send("x 2") == 2
            # the call that raised Cancelled sent nothing, to the peer or to us
            expected = [("0",)] + [("1",)] * sent + [("2",)]
            assert [(await ours.receive()).groups for _ in expected] == expected
            assert [(await theirs.receive()).groups for _ in expected] == expected


async def test_two_tasks_sending_to_a_slow_subscription_lose_nothing(bus: str) -> None:
    """15,000 texts from each of two tasks, read slowly: all arrive, in each task's order."""
    count = 15_000
    with trio.fail_after(60):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True) as a:
            texts = a.subscribe(r"^(\w) (\d+)$", max_buffer=100)

            async def sender(name: str) -> None:
                for i in range(count):
                    assert await a.send(f"{name} {i}") == 1  # waits for room, never drops

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender, "p")
                nursery.start_soon(sender, "q")
                seen: dict[str, list[int]] = {"p": [], "q": []}
                async for match in texts:
                    name, number = match.groups
                    seen[name].append(int(number))
                    if len(seen["p"]) + len(seen["q"]) == 2 * count:
                        break
                    if len(seen[name]) % 1000 == 0:
                        await trio.sleep(0.001)  # a slow reader
            assert seen == {"p": list(range(count)), "q": list(range(count))}


async def test_a_callback_answering_itself_loops_fairly(bus: str) -> None:
    echoes = 0
    most_queued = 0
    enough = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True) as a:
            assert a._to_self is not None
            queue = a._to_self._queue

            async def echo(peer: trivy.Peer, text: str) -> None:
                nonlocal echoes, most_queued
                echoes += 1
                most_queued = max(most_queued, len(queue))
                if echoes == 20_000:
                    enough.set()
                await a.send(f"echo {text}")  # always matches itself again

            a.bind(echo, r"^echo (e)$")
            ticks = 0
            longest = 0.0
            await a.send("echo e")
            last = time.perf_counter()
            while not enough.is_set():
                ticks += 1  # other tasks run meanwhile
                await trio.lowlevel.checkpoint()
                now = time.perf_counter()
                longest, last = max(longest, now - last), now
            assert ticks > 10
            assert longest < 0.25  # the delivery task yields every 2 ms of work
            assert most_queued <= 1
        # and the bus left, the loop with it


async def test_callbacks_answering_themselves_twice_stay_bounded_with_an_error(bus: str) -> None:
    from trivy._self_delivery import MAX_QUEUED

    seen = 0
    refused = 0
    most_queued = 0
    enough = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True) as a:
            assert a._to_self is not None
            queue = a._to_self._queue

            async def fork(peer: trivy.Peer) -> None:
                nonlocal seen, refused, most_queued
                seen += 1
                most_queued = max(most_queued, len(queue))
                if seen == 5000:
                    enough.set()
                for _ in range(2):
                    try:
                        await a.send("fork")
                    except trivy.IvyIllegalStateError:
                        refused += 1  # the queue is full: a task cannot wait for itself

            a.bind(fork, r"^fork$")
            await a.send("fork")
            await enough.wait()  # other tasks run meanwhile
    assert most_queued <= MAX_QUEUED
    assert refused > 0


async def test_java_newlines_are_matched_as_peers_match_them(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, send_to_self=True, java_newlines=True) as a:
            lines = a.subscribe(r"^a(.)b$")
            assert await a.send("a\nb") == 1
            assert (await lines.receive()).groups == ("\n",)

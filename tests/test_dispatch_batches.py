"""The matches of one read go to a subscription's buffer together, as if one by one.

A peer's reader puts the matches of consecutive MSGs for one subscription
in its buffer with one call; whatever comes between them (a callback,
another subscription's MSG, a big match, a full buffer) sees them as it
would have one by one. Real sockets: a hand-driven peer sends the lines.
"""

from __future__ import annotations

import trio
import trio.testing

import trivy
from trivy._channels import BIG_ITEM, BufferedReceiveChannel
from trivy.testing import RawPeer

TIMEOUT = 10


async def test_matches_for_several_subscriptions_and_a_callback_keep_their_order(
    bus: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            first = me.subscribe("^a (.*)")  # id 0
            taken = 0
            seen: list[tuple[str, int]] = []
            # (what a callback sees: every MSG of the subscription before it)
            me.bind(lambda _peer, text: seen.append((text, taken + len(first))), "^b (.*)")
            second = me.subscribe("^c (.*)")  # id 2
            raw = await RawPeer.connect(me)
            await raw.handshake()
            lines = []
            for i in range(120):
                lines.append(b"2 0\x02%d\x03\n" % i)
                if i % 40 == 39:
                    lines.append(b"2 1\x02%d\x03\n" % i)
                if i % 3 == 0:
                    lines.append(b"2 2\x02%d\x03\n" % i)
            big = "x" * (BIG_ITEM + 1)  # (counted against the buffer's bytes: put apart)
            lines += [b"2 0\x02" + big.encode() + b"\x03\n", b"2 0\x02end\x03\n"]
            await raw.send(b"".join(lines))  # (one write: read in one or a few reads)
            got = []
            for _ in range(122):
                got.append((await first.receive()).groups[0])
                taken += 1
            assert got == [str(i) for i in range(120)] + [big, "end"]
            assert [(await second.receive()).groups[0] for _ in range(40)] == [
                str(i) for i in range(0, 120, 3)
            ]
            assert seen == [("39", 40), ("79", 80), ("119", 120)]
            await raw.aclose()


async def test_past_a_full_buffer_the_reader_waits_and_the_rest_follow_in_order(
    bus: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("ME", bus) as me:
            small = me.subscribe("^a (.*)", max_buffer=10)
            raw = await RawPeer.connect(me)
            await raw.handshake()
            await raw.send(b"".join(b"2 0\x02%d\x03\n" % i for i in range(500)))
            got = []
            for _ in range(500):
                await trio.testing.wait_all_tasks_blocked()  # (the reader waits for room)
                assert len(small) <= 10
                got.append((await small.receive()).groups[0])
            assert got == [str(i) for i in range(500)]
            await raw.aclose()


async def test_a_batch_wakes_as_many_waiting_consumers_as_it_brings_items() -> None:
    channel: BufferedReceiveChannel[str] = BufferedReceiveChannel(10)
    got: list[str] = []

    async def consumer() -> None:
        got.append(await channel.receive())

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            assert channel._put_many(["one", "two"]) == 2
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(got) == ["one", "two"]  # (two woken, the third still waits)
            assert channel._put_many(["three", "four"]) == 2
    assert sorted(got) == ["one", "three", "two"] and channel.receive_nowait() == "four"
    full: BufferedReceiveChannel[str] = BufferedReceiveChannel(3)
    assert full._put_many(["a", "b", "c", "d"]) == 3  # (the room there is)
    assert full._put_many(["e"]) == 0
    full.close()
    assert full._put_many(["f"]) == 1  # (closed: dropped, as a put drops it)

"""What all the peers' subscriptions cost together, not only each one's.

Each peer's subscriptions are bounded (10,000, 1 Mi characters, a cost
bound a character of text), but a thousand peers each within its bounds
could make every send of ours seconds of work: these tests attack from
many raw sockets at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio

import trivy
from trivy import _fan_out
from trivy.testing import RawPeer, wait_for_subscription

TIMEOUT = 60


async def _subscribe(bus: trivy.IvyBus, index: int, adds: bytes) -> tuple[RawPeer, list[bytes]]:
    """Raw peer ``index`` (its own port), subscribed with ``adds``; its ERRORs."""
    raw = await RawPeer.connect(bus)
    await raw.send(b"6 %d\x02RAW%d\n%b5 0\x02\n9 1\x02\n" % (2000 + index, index, adds))
    errors = []  # (our ERRORs to its regexps come before the PONG)
    while (line := await raw.line()) != b"10 1\x02":
        assert line, "the connection closed"
        if line.startswith(b"3 "):
            errors.append(line)
    return raw, errors


async def _peers_with(
    bus: trivy.IvyBus, peers: int, per_peer: int, regexp: Callable[[int, int], bytes]
) -> list[RawPeer]:
    """``peers`` raw peers, peer i subscribed to ``regexp(i, k)`` for k < ``per_peer``."""
    raws = []
    for index in range(peers):
        adds = b"".join(b"1 %d\x02%s\n" % (k, regexp(index, k)) for k in range(per_peer))
        raw, errors = await _subscribe(bus, index, adds)
        assert not errors  # (all taken)
        raws.append(raw)
    return raws


async def test_the_subscriptions_of_all_the_peers_are_bounded(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 peers of 10,000 ids for one regexp made 3 million MSGs a send (2 s) and 729 MB."""
    from trivy._peer_regexps import MAX_SUBSCRIPTIONS, SUBSCRIPTION_FLOOR

    monkeypatch.setattr(_fan_out, "SEND_BUDGET", 10.0)  # (every MSG counted, however slow)
    peers, ids = 8, 10_000
    adds = b"".join(b"1 %d\x02^x\n" % i for i in range(ids))
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raws, refused = [], []
            for index in range(peers):
                raw, errors = await _subscribe(a, index, adds)
                raws.append(raw)
                refused.append(len(errors))
            # a newcomer still subscribes: the first peers did not shut it out
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                sub = good.subscribe("^x(.*)")
                await wait_for_subscription(a, "GOOD", sub.regexp)
                count = await a.send("xyz")
                assert (await sub.receive()).groups == ("yz",)
            for raw in raws:
                await raw.aclose()
    assert sum(refused) == peers * ids - MAX_SUBSCRIPTIONS - 3 * SUBSCRIPTION_FLOOR, refused
    # the first five filled the table; the others kept the floor a peer
    assert refused[-1] == ids - SUBSCRIPTION_FLOOR
    assert count == MAX_SUBSCRIPTIONS + 3 * SUBSCRIPTION_FLOOR + 1  # (was 80,001)


async def test_a_lower_bound_on_subscriptions_is_an_option(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, max_subscriptions=150) as a:
            raw, errors = await _subscribe(a, 0, b"".join(b"1 %d\x02^x\n" % i for i in range(300)))
            _, more = await _subscribe(a, 1, b"1 0\x02^y\n")
            await raw.aclose()
    assert len(errors) == 300 - 150  # (the peer holds more than the floor, 100)
    assert b"subscriptions in all" in errors[0]
    assert not more


async def test_many_peers_cheap_regexps_together_share_the_send_budget(bus: str) -> None:
    """80 peers, each with 75 ``\\w\\W<c>`` just under its own timed bound: 240 ms a send."""
    from trivy._send_budgets import SEND_BUDGET, TIMED_ALL_STEPS, TIMED_PEER_STEPS

    peers, per_peer = 80, 75
    text = "ok " * 600  # each peer's bound on it: 945,000 steps, untimed alone
    assert per_peer * 7 * len(text) < TIMED_PEER_STEPS < TIMED_ALL_STEPS < peers * 945_000
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            trivy.open_ivy_bus("GOOD", bus) as good,
        ):
            raws = await _peers_with(
                a, peers, per_peer, lambda i, k: b"\\w\\W" + chr(0x4E00 + i * per_peer + k).encode()
            )
            # (no literal prefix, searched after theirs: the budget is spent by then)
            sub = good.subscribe("^(?:ok|yes) (ok)")
            await wait_for_subscription(a, "GOOD", sub.regexp)
            took = []
            for _ in range(3):
                started = time.thread_time()  # (CPU: a loaded machine inflates no figure)
                assert await a.send(text) == 1  # GOOD's anchored regexp is never skipped
                took.append(time.thread_time() - started)
                assert (await sub.receive()).groups == ("ok",)
            for raw in raws:
                await raw.aclose()
    print(f"sends took {[round(t * 1000) for t in took]} ms of CPU")
    # the budget, and the timing of the searches skipped
    assert max(took) < SEND_BUDGET + 0.03, took


async def test_many_subscriptions_matched_by_one_text_cost_a_bounded_send(bus: str) -> None:
    """Each peer within the bounds, 100 cheap regexps of 42 groups that all
    match: 999 such peers made one send 0.8 s of MSGs (each built apart)."""
    from trivy._send_budgets import SEND_BUDGET

    peers, per_peer = 200, 100
    groups = "(" * 42 + ".{0,60}" + ")" * 42
    text = "x" + "y" * 99
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raws = await _peers_with(
                a, peers, per_peer, lambda i, k: b"^x%s(?#%d.%d)" % (groups.encode(), i, k)
            )
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                sub = good.subscribe("^x(y*)$")  # (after theirs: searched last)
                await wait_for_subscription(a, "GOOD", sub.regexp)
                took = []
                for _ in range(3):
                    started = time.thread_time()
                    await a.send(text)
                    took.append(time.thread_time() - started)
                    assert (await sub.receive()).groups == ("y" * 99,)
            for raw in raws:
                await raw.aclose()
    print(f"sends took {[round(t * 1000) for t in took]} ms of CPU")
    assert max(took) < SEND_BUDGET + 0.045, took  # (95 ms before)


async def test_a_light_peers_regexps_are_searched_past_the_budget(bus: str) -> None:
    """50 peers of 400 ``^h.*\\w\\W<c>`` spent the 40 ms of every send before a
    newcomer's ``^hello (.*)``, searched last and skipped for every text of 99
    characters or more: it missed them all."""
    peers, per_peer = 50, 400
    text = "hello " + "z" * 200
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            unique = lambda i, k: chr(0x10000 + i * per_peer + k).encode()  # noqa: E731
            raws = await _peers_with(a, peers, per_peer, lambda i, k: b"^h.*\\w\\W" + unique(i, k))
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                subs = [good.subscribe("^hello (.*)"), good.subscribe("^hello (\\w+)")]
                for sub in subs:
                    await wait_for_subscription(a, "GOOD", sub.regexp)
                for _ in range(5):
                    await a.send(text)
                    for sub in subs:  # (a light peer: its regexps searched all the same)
                        assert (await sub.receive()).groups == ("z" * 200,)
            for raw in raws:
                await raw.aclose()


async def test_one_regexps_many_subscriptions_cost_a_bounded_send(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150,000 subscriptions of one ``^x`` (each peer within its bounds, the
    total raised) cost a send 70 to 107 ms: the clock was looked at between
    regexps only, never within one regexp's subscribers."""
    peers, ids = 20, 7_500
    # (a budget spent at the second look: the MSGs a send makes are then
    # counted exactly, whatever the machine's speed)
    monkeypatch.setattr(_fan_out, "SEND_BUDGET", 0.0)
    adds = b"".join(b"1 %d\x02^x(.*)\n" % i for i in range(ids))
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus, max_subscriptions=200_000) as a:
            raws = []
            for index in range(peers):
                raw, errors = await _subscribe(a, index, adds)
                assert not errors
                raws.append(raw)
            async with trivy.open_ivy_bus("GOOD", bus) as good:
                sub = good.subscribe("^x(.*)")  # (the same regexp: its last subscriber)
                await wait_for_subscription(a, "GOOD", sub.regexp)
                started = time.thread_time()
                count = await a.send("xyz")
                took = time.thread_time() - started
                assert (await sub.receive()).groups == ("yz",)
            for raw in raws[1:]:  # every peer got one MSG at least, none twice
                assert await raw.line() == b"2 0\x02yz\x03"
            first = [await raws[0].line() for _ in range(2 * _fan_out.FAN_OUT_CHECK)]
            assert first == [b"2 %d\x02yz\x03" % i for i in range(len(first))]
            for raw in raws:
                await raw.aclose()
    print(f"the send took {took * 1000:.0f} ms of CPU")
    # two looks at the clock, then one MSG more for each other peer
    assert count == 2 * _fan_out.FAN_OUT_CHECK + peers  # (was 150,001)

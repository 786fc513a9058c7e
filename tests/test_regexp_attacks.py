"""A peer's regexps cannot stall the agent: the red team's four, from a raw socket.

Each test runs a heartbeat task in the attacked agent and asserts the
longest the event loop went without it (under 250 ms: coarse on purpose,
for CI), with a legitimate peer that still gets its message.
"""

from __future__ import annotations

import time

import trio
import trio.testing

import trivy
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

from .heartbeat import Heartbeat, LongestStep

TIMEOUT = 20
STALL = 0.25


async def _pong(raw: RawPeer, ping_id: int) -> None:
    await raw.send(b"9 %d\x02\n" % ping_id)
    assert await raw.line_starting(b"10 %d\x02" % ping_id) == b"10 %d\x02" % ping_id


async def _attack(bus: str, regexps: list[bytes], texts: list[str]) -> tuple[float, list[bytes]]:
    """Subscribe ``regexps`` from a raw peer, send ``texts``; (loop stall, ERRORs)."""
    heartbeat = Heartbeat()
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            trivy.open_ivy_bus("GOOD", bus) as good,
            trio.open_nursery() as nursery,
        ):
            sub = good.subscribe("^ok (.*)")
            await wait_for_subscription(a, "GOOD", sub.regexp)
            raw = await RawPeer.connect(a)
            await raw.handshake("RAW")
            await _pong(raw, 1)
            nursery.start_soon(heartbeat.run)
            await trio.testing.wait_all_tasks_blocked()
            adds = b"".join(b"1 %d\x02%s\n" % (i, regexp) for i, regexp in enumerate(regexps))
            await raw.send(adds + b"9 2\x02\n")
            errors = []  # (our ERRORs to its regexps come before the PONG)
            while (line := await raw.line()) != b"10 2\x02":
                if line.startswith(b"3 "):
                    errors.append(line)
            for text in texts:
                await a.send(text)
            assert await a.send("ok still here") == 1  # the legitimate peer is served
            assert (await sub.receive()).groups == ("still here",)
            await _pong(raw, 3)  # it is still connected
            nursery.cancel_scope.cancel()
            await raw.aclose()
    return heartbeat.longest, errors


async def test_a_regexp_that_would_compile_for_seconds_is_refused_at_once(bus: str) -> None:
    """(?i) and 3,200 classes covering the BMP in 16,004 characters: compiled 21-26 s."""
    regexp = ("(?i)" + "[\u0000-\uffff]" * 3200).encode()
    started = time.perf_counter()
    stall, errors = await _attack(bus, [regexp] * 3, ["hello"])
    assert time.perf_counter() - started < 5
    assert len(errors) == 3
    assert all(b"too costly to compile" in error for error in errors)
    assert stall < STALL, stall


async def test_classes_of_a_few_characters_past_latin1_are_counted_before_compiling(
    bus: str,
) -> None:
    """3,270 classes of three such characters in a regexp compiled for 270 ms
    (a table of the whole BMP each): 64 of them held the loop 300 ms a line."""
    regexp = "^" + "[\u0100\u0200\u0300]" * 3270
    regexps = [(regexp + str(i)).encode() for i in range(8)]
    stall, errors = await _attack(bus, regexps, ["hello"])
    assert len(errors) == 8
    assert all(b"too costly to compile" in error for error in errors)
    assert stall < STALL, stall


async def test_categories_under_two_flags_cannot_hide_exponential_backtracking(bus: str) -> None:
    """Unicode's \\w and ASCII's \\W were taken as disjoint: a search of 24
    letters past ASCII held the loop 1.3 s, each more doubling it."""
    regexps = [b"(?:\\w*(?a:\\W))*(?!)", b"(?:\\d*(?a:\\W))*(?!)"]
    stall, _errors = await _attack(bus, regexps, ["\u00e9" * 24, "\u0663" * 24, "ok"])
    assert stall < STALL, stall


async def test_regexps_costly_whatever_the_text_share_a_budget_too(bus: str) -> None:
    """113 ``^(?:){300000}``: 7 ms a search on any text, counted at 1,756 steps
    a character, so a peer's budget took them all, and a send of two
    characters, untimed, held the loop 366 ms (10 peers: 2.9 s)."""
    regexps = [b"^(?:){%d}z" % (300_000 + k) for k in range(113)]
    stall, errors = await _attack(bus, regexps, ["ok", "hello", "ok"])
    assert stall < STALL, stall
    assert len(errors) >= 112
    assert all(b"steps every text" in error for error in errors)


async def test_nested_fixed_repeats_around_lookaheads_are_bounded(bus: str) -> None:
    """2,000 of them made every send of a 100-character text take 14 s."""
    shape = b"(?:(?=(?:(?=(?:(?=.{16}).){16}).){16}).){16}(?!)z%d"
    stall, errors = await _attack(bus, [shape % i for i in range(2000)], ["a" * 100] * 3)
    assert stall < STALL, stall
    assert errors  # most refused: a peer holds 8 regexps that need the guard


async def test_a_long_fixed_repeat_after_a_variable_one_is_guarded(bus: str) -> None:
    """8 such regexps and a 3,162-character text: each send took 8.4-9.7 s."""
    regexps = [b".*.{1054}(?!)z%d" % i for i in range(8)]
    stall, _errors = await _attack(bus, regexps, ["a" * 3162] * 3)
    assert stall < STALL, stall


async def test_a_fixed_repeat_of_a_fixed_repeat_on_a_long_text_is_guarded(bus: str) -> None:
    """``(?:.{999}){100}(?!)`` and a 200 KB text: each send took 4-7 s."""
    stall, _errors = await _attack(bus, [b"(?:.{999}){100}(?!)"], ["a" * 200_000] * 3)
    assert stall < STALL, stall


async def test_many_regexps_each_cheap_enough_share_one_budget(bus: str) -> None:
    """10,000 lookaheads of 40 characters, each under the guard's radar: a send
    of 100 characters ran them all (40-160 ms)."""
    from trivy._send_budgets import MAX_PEER_STEPS_PER_CHAR

    regexps = [b"(?=.{40})z%d" % i for i in range(10_000)]
    stall, errors = await _attack(bus, regexps, ["a" * 100] * 5)
    assert stall < STALL, stall
    accepted = len(regexps) - len(errors)
    assert 0 < accepted < len(regexps)
    assert all(b"steps a character of every text" in error for error in errors)
    assert accepted * 57 <= MAX_PEER_STEPS_PER_CHAR  # (57 steps a character each)


async def test_ten_thousand_plain_regexps_fit_a_peers_budget(bus: str) -> None:
    anchored = [b"^word%d (.*)" % i for i in range(5_000)]
    unanchored = [b"lit%d" % i for i in range(5_000)]
    stall, errors = await _attack(bus, anchored + unanchored, ["word7 hello lit9"])
    assert errors == []
    assert stall < STALL, stall


async def test_a_send_spends_a_bounded_time_on_one_peers_regexps(bus: str) -> None:
    """Within the budget a character, thousands of lookaheads still cost a long
    text seconds: measured, one send spends 20 ms on them, then skips them."""
    from trivy._send_budgets import PEER_SEND_BUDGET

    heartbeat = Heartbeat()
    regexps = b"".join(b"1 %d\x02(?=.{40})z%d\n" % (i, i) for i in range(10_000))
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus) as a,
            a.events() as events,
            trio.open_nursery() as nursery,
        ):
            raw = await RawPeer.connect(a)
            await raw.handshake("RAW", regexps)
            await _pong(raw, 1)
            nursery.start_soon(heartbeat.run)
            took = []
            for _ in range(3):  # (CPU time: a busy machine may hold the process off)
                started = time.thread_time()
                await a.send("a" * 10_000)
                took.append(time.thread_time() - started)
            left = await wait_for_event(events, trivy.PeerDisconnected)
            nursery.cancel_scope.cancel()
            await raw.aclose()
    assert isinstance(left, trivy.PeerDisconnected)
    assert left.reason.startswith("its regexps took over 20 ms")
    assert max(took) < PEER_SEND_BUDGET + 0.1, took
    assert heartbeat.longest < STALL, heartbeat.longest


async def test_the_costly_regexps_of_all_the_peers_share_one_budget_a_send(bus: str) -> None:
    """Many peers, each within its own 20 ms a send: 300 of them held a send 3.2 s."""
    from trivy._send_budgets import SEND_BUDGET

    peers, per_peer = 12, 6
    text = "x" * 100  # each of these regexps needs the guard: about 2 ms on it
    with trio.fail_after(TIMEOUT * 2):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as events:
            raws = []
            for index in range(peers):
                raw = await RawPeer.connect(a)
                lines = b"".join(
                    b"1 %d\x02[a-z ]*[a-z ]*[A-Z%s]\n" % (k, chr(0x4E00 + index * 10 + k).encode())
                    for k in range(per_peer)
                )
                await raw.send(b"6 %d\x02COSTLY%d\n%b5 0\x02\n" % (2000 + index, index, lines))
                await _pong(raw, 1)
                raws.append(raw)
            took = []
            for _ in range(3):
                started = time.thread_time()  # (CPU: a loaded machine inflates no figure)
                await a.send(text)
                took.append(time.thread_time() - started)
            # the peers that cost the most got their third strike: dropped
            left = await wait_for_event(events, trivy.PeerDisconnected)
            for raw in raws:
                await raw.aclose()
    print(f"sends took {[round(t * 1000) for t in took]} ms of CPU")
    assert left.reason.startswith("its regexps took over")
    # the budget, and the one search that crossed it (2 ms, 20 at most)
    assert max(took) < SEND_BUDGET + 0.03, took


async def test_a_peers_many_cheap_regexps_on_a_long_text_are_timed(bus: str) -> None:
    """10,000 ``\\w\\W<c>``, each cheap, untimed: 220 ms a send of 1,000 characters."""
    from trivy._send_budgets import PEER_SEND_BUDGET, TIMED_PEER_STEPS

    regexps = b"".join(b"1 %d\x02\\w\\W%s\n" % (i, chr(0x4E00 + i).encode()) for i in range(2000))
    text = "ab " * 600  # (each search under the bound that times it: 2,857 characters)
    with trio.fail_after(TIMEOUT * 2):
        async with trivy.open_ivy_bus("A", bus) as a, a.events() as events:
            raw = await RawPeer.connect(a)
            await raw.handshake("CHEAP", regexps)
            await _pong(raw, 1)
            took = []
            for _ in range(3):
                started = time.thread_time()
                await a.send(text)
                took.append(time.thread_time() - started)
            left = await wait_for_event(events, trivy.PeerDisconnected)
            await raw.aclose()
    print(f"sends took {[round(t * 1000) for t in took]} ms of CPU")
    assert left.reason.startswith("its regexps took over")
    assert 2000 * len(text) > TIMED_PEER_STEPS  # (the model's few steps a character each)
    # its budget, and the timing of searches it skips (about 1 us each)
    assert max(took) < PEER_SEND_BUDGET + 0.03, took


async def _send_loop_longest_step(bus: str, regexps: list[bytes], text: str, sends: int) -> float:
    """A raw peer subscribes ``regexps``; the agent sends ``text`` back to back:
    the longest step of the loop meanwhile."""
    with trio.fail_after(TIMEOUT * 2):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            adds = b"".join(b"1 %d\x02%s\n" % (i, regexp) for i, regexp in enumerate(regexps))
            await raw.send(b"6 1234\x02RAW\n" + adds + b"5 0\x02\n")
            peer = await a.wait_for_peer("RAW")
            while len(peer.subscriptions) < len(regexps):
                await trio.testing.wait_all_tasks_blocked()
            steps = LongestStep()
            trio.lowlevel.add_instrument(steps)
            await trio.lowlevel.checkpoint()  # (the step running when it is added is not counted)
            try:
                for _ in range(sends):
                    await a.send(text)
                await trio.lowlevel.checkpoint()  # (the step ends: counted)
            finally:
                trio.lowlevel.remove_instrument(steps)
            await raw.aclose()
    return steps.longest


async def test_a_send_loop_yields_once_its_sends_took_the_loops_slice(bus: str) -> None:
    """Sends of 1 ms each (a peer's cheap regexps, within every bound) yielded
    every 1,024 calls: 300 of them held the loop 235 ms in one step."""
    regexps = [b"x{20}z%d" % i for i in range(380)]
    longest = await _send_loop_longest_step(bus, regexps, "x" * 100, 200)
    assert longest < 0.05, longest


async def test_a_dropped_peers_regexps_are_not_searched_while_they_wait_to_be_swept(
    bus: str,
) -> None:
    """A peer dropped at its third costly send left 4,000 regexps for the
    sweep, searched untimed meanwhile (its budgets were gone): 75 ms a send,
    and 30 sends in one step of 2.2 s."""
    regexps = [b"x{20}z%d" % i for i in range(4000)]
    longest = await _send_loop_longest_step(bus, regexps, "x" * 1000, 30)
    assert longest < 0.1, longest


async def test_a_peer_whose_regexps_keep_being_refused_is_dropped(bus: str) -> None:
    """Refused regexps were counted in no limit: one connection could make
    us check regexps for ever (600 of 4 Ki that need the guard: 10.75 s of
    CPU). Past 1 Mi characters refused, the peer is dropped."""
    from trivy._dispatch import MAX_REFUSED_CHARACTERS

    regexp = b"(" + b"a" * 4095  # (does not compile)
    count = MAX_REFUSED_CHARACTERS // len(regexp) + 10
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            await raw.handshake("REFUSED")
            await _pong(raw, 1)
            adds = b"".join(b"1 %d\x02%s\n" % (i, regexp) for i in range(count))
            await raw.send(adds + b"9 2\x02\n")
            errors = 0
            while (line := await raw.line()) and not line.startswith(b"10 "):
                errors += line.startswith(b"3 ")
            assert line == b""  # closed before the PONG
            assert MAX_REFUSED_CHARACTERS // len(regexp) <= errors < count
            assert a.peer("REFUSED") is None

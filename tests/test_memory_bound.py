"""One bound on the bytes held for all the peers together (``max_buffered_bytes``).

Each peer's own limits (4 MiB queued for it, a 1 MiB line) are fine for
tens of peers; a thousand at those limits held gigabytes. The peers now
share the bound once their own limits add up past it.
"""

from __future__ import annotations

import contextlib

import attrs
import trio
import trio.testing

import trivy
from trivy._memory_shares import MIN_SHARE, MemoryShares
from trivy.testing import RawPeer, wait_for_event, wait_for_subscription

from .heartbeat import Heartbeat

MiB = 1024 * 1024
TIMEOUT = 20


@attrs.define(eq=False, slots=False)
class FakeSession:
    """What the shares see of a peer: what it holds, its limits, whether it was closed."""

    bytes_held: int = 0
    limits: tuple[int, int, int] | None = None
    aborted: str = ""

    def limit_memory(self, send_limit: int, max_line_length: int, max_excess: int) -> None:
        self.limits = (send_limit, max_line_length, max_excess)

    def abort(self, reason: str = "") -> None:
        self.aborted = reason


def test_a_few_peers_keep_their_own_limits_many_share_the_bound() -> None:
    shares = MemoryShares(256 * MiB, send_limit=4 * MiB, max_line_length=MiB)
    own = shares.limits_for(1)
    assert own == (4 * MiB, MiB, 16 * MiB)
    # 16 peers keep their 4 MiB queue and 128 their 1 MiB line; the excess
    # of a waiting send (16 MiB) is the first to be shared
    assert shares.limits_for(16)[:2] == (4 * MiB, MiB)
    assert shares.limits_for(17)[0] == 2 * MiB
    assert shares.limits_for(128)[1] == MiB
    send_limit, line_limit, excess = shares.limits_for(1000)
    assert line_limit == 128 * 1024  # 256 Mi / 2000 = 131 Ki, down to a power of two
    assert send_limit + excess == line_limit
    assert 1000 * (send_limit + excess + line_limit) <= 256 * MiB
    assert shares.limits_for(10**6) == (MIN_SHARE // 2, MIN_SHARE, MIN_SHARE // 2)
    # a power of two: the limits change a dozen times as 1,000 peers come
    assert len({shares.limits_for(n) for n in range(1, 1001)}) <= 12


def test_a_join_closes_the_largest_holders_when_the_total_is_over() -> None:
    shares = MemoryShares(4 * MiB, send_limit=MiB, max_line_length=MiB)
    sessions = [FakeSession(bytes_held=size) for size in (2 * MiB, MiB, MiB // 2, MiB // 2)]
    shares.peers_changed(sessions[:3], sessions[2])  # 3.5 MiB: within the bound
    assert not any(s.aborted for s in sessions)
    sessions[3].bytes_held = MiB // 2 + 1
    shares.peers_changed(sessions, sessions[3])  # 4 MiB + 1 byte: over it
    assert [bool(s.aborted) for s in sessions] == [True, False, False, False]
    assert "holding 2097152 bytes" in sessions[0].aborted
    assert all(s.limits == shares.limits_for(4) for s in sessions)
    sessions[0].aborted = ""
    shares.peers_changed(sessions[1:])  # a leave closes nobody
    assert not any(s.aborted for s in sessions)


class CountedSession(FakeSession):
    """A session that counts how often its holding is read."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0
        self.reads = 0

    def __getattribute__(self, name: str) -> object:
        if name == "bytes_held":
            self.reads += 1
            return self.held
        return super().__getattribute__(name)


def test_the_total_is_summed_only_while_a_session_may_hold_more_than_its_limits() -> None:
    # (a join costs O(1), not a pass over every peer, while the limits hold)
    shares = MemoryShares(4 * MiB, send_limit=MiB, max_line_length=MiB)
    sessions = [CountedSession() for _ in range(5)]
    shares.peers_changed(sessions[:3], sessions[2])  # the limits shrink: checked
    assert sum(s.reads for s in sessions) == 3
    shares.peers_changed(sessions[:4], sessions[3])  # same limits, all within: not summed
    assert sum(s.reads for s in sessions) == 3
    sessions[0].held = 5 * MiB  # (say, queued before the limits shrank)
    shares.peers_changed(sessions, sessions[4])  # they shrink again: summed, and over
    assert sum(s.reads for s in sessions) == 8
    assert sessions[0].aborted and not any(s.aborted for s in sessions[1:])


def _held(bus: trivy.IvyBus) -> int:
    return sum(session.bytes_held for session in bus._peers)


class PeakHeld:
    """The most bytes the bus held for its peers, sampled every millisecond."""

    def __init__(self, bus: trivy.IvyBus) -> None:
        self.bus = bus
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, _held(self.bus))
            await trio.sleep(0.001)


async def test_peers_that_never_read_and_never_end_a_line_share_the_bound(bus: str) -> None:
    """16 such peers held 64 MiB for us (4 MiB queued each) and 16 MiB of lines."""
    bound = 8 * MiB
    heartbeat = Heartbeat()
    with trio.fail_after(TIMEOUT):
        async with (
            # (leaving, A waits for peers that never read: not 10 s here)
            trivy.open_ivy_bus(
                "A", bus, max_buffered_bytes=bound, overflow="drop", leave_timeout=0.5
            ) as a,
            a.events() as events,
            trivy.open_ivy_bus("B", bus) as b,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(heartbeat.run)
            peak = PeakHeld(a)
            nursery.start_soon(peak.run)
            legit = b.subscribe("^(legit .*)")
            await wait_for_subscription(a, "B", "^(legit .*)")
            raws = []
            for i in range(16):
                raw = await RawPeer.connect(a)
                await raw.send(b"6 %d\x02R%d\n1 1\x02^(.*)\n5 0\x02\n" % (3000 + i, i))
                raws.append(raw)
            while len(a.peers) < 17:
                await trio.testing.wait_all_tasks_blocked()
            text = "x" * 4096
            for _ in range(4000):  # 16 MiB of texts for each peer
                a.send_nowait(text)
                await trio.lowlevel.checkpoint()
            queued = _held(a)
            # each raw peer now starts a line it never ends, of 512 KiB
            # (under the 1 MiB a line may have, over the peers' share)
            for raw in raws:
                # (dropped while it still sends, its unread MSGs queued before
                # our ERROR: the connection is reset, the ERROR lost; and as
                # peers go, the shares of the others grow: the last ones may
                # hold their whole line, within the bound)
                with contextlib.suppress(trio.BrokenResourceError):
                    for _ in range(8):
                        await raw.send(b"y" * 65536)
            left = await wait_for_event(events, trivy.PeerDisconnected)
            # over its share of 17 peers or so: 128 or 256 KiB, not its own 1 MiB
            assert left.reason.startswith("line longer than "), left.reason
            assert int(left.reason.split()[3]) <= 256 * 1024, left.reason
            await a.send("legit still served")
            match = await legit.receive()
            assert match.groups == ("legit still served",)
            nursery.cancel_scope.cancel()
            for raw in raws:
                await raw.aclose()
    print(f"held {queued / MiB:.1f} MiB queued, at most {peak.peak / MiB:.1f} MiB in all")
    assert queued <= bound // 2, queued
    assert peak.peak <= bound, peak.peak
    assert heartbeat.longest < 0.25, heartbeat.longest


async def test_the_bound_is_an_option_and_so_is_the_regexps_one(bus: str) -> None:
    async with trivy.open_ivy_bus("A", bus, max_regexp_characters=10) as a:
        raw = await RawPeer.connect(a)
        await raw.handshake("R", b"1 1\x02^(abcdefghijk)\n")
        error = await raw.line_starting(b"3 ")
        assert b"over 10 characters" in error, error
        await raw.aclose()

"""Floods from another process cost the agent a slice of time at once, no more.

A heartbeat task in the attacked agent measures the longest the event loop
went without it (asserted under 250 ms: coarse on purpose, for CI).
"""

from __future__ import annotations

import sys

import trio

import trivy
from trivy.testing import RawPeer

from .heartbeat import Heartbeat, LongestStep

#: A process that opens connections as fast as it can (without waiting for
#: them to complete) and never speaks, keeping the last 2,000 open.
CONNECTION_FLOOD = """
import collections, socket, sys
port = int(sys.argv[1])
kept = collections.deque()
while True:
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    kept.append(sock)
    if len(kept) > 2000:
        kept.popleft().close()
"""


async def test_a_connection_flood_that_never_speaks_stalls_nothing(bus: str) -> None:
    """One process: the loop stalled 7-19 s, new agents were joined 20 s late."""
    heartbeat = Heartbeat()
    with trio.fail_after(20):
        async with trivy.open_ivy_bus("A", bus) as a, trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat.run)
            command = [sys.executable, "-c", CONNECTION_FLOOD, str(a.port)]
            flood = await trio.lowlevel.open_process(command)
            try:
                await trio.sleep(1.0)  # under the flood for a while
                start = trio.current_time()
                async with trivy.open_ivy_bus("NEWCOMER", bus) as newcomer:
                    await a.wait_for_peer("NEWCOMER")
                    await newcomer.wait_for_peer("A")
                    joined = trio.current_time() - start
            finally:
                flood.kill()
                await flood.wait()
            nursery.cancel_scope.cancel()
    print(f"longest stall {heartbeat.longest * 1000:.0f} ms, joined in {joined:.2f} s")
    assert heartbeat.longest < 0.25, heartbeat.longest
    assert joined < 3.0, joined


async def test_connections_to_an_agent_of_many_subscriptions_each_cost_little(bus: str) -> None:
    """Each accepted connection encoded the agent's whole handshake: with
    10,000 subscriptions, a step of 80 ms a connection (a process that only
    connects and closes held the loop 316 ms a pass). The lines are now
    encoded once between two changes of the subscriptions."""
    with trio.fail_after(60):
        async with trivy.open_ivy_bus("A", bus) as a:
            for i in range(5000):
                a.bind(lambda *_: None, f"^x{i} (.*)")
            first = await RawPeer.connect(a)
            lines = [await first.line() for _ in range(5002)]
            assert lines[1:3] == [b"1 0\x02^x0 (.*)", b"1 1\x02^x1 (.*)"]
            assert lines[-1] == b"5 0\x02"
            steps = LongestStep()
            trio.lowlevel.add_instrument(steps)
            try:
                for _ in range(20):
                    raw = await RawPeer.connect(a)
                    assert (await raw.line()).startswith(b"6 ")
                    await raw.aclose()
            finally:
                trio.lowlevel.remove_instrument(steps)
            assert steps.longest < 0.010, steps.longest  # (40 ms before)
            a.bind(lambda *_: None, "^last")  # (a change: the next handshake has it)
            raw = await RawPeer.connect(a)
            assert [await raw.line() for _ in range(5003)][-2] == b"1 5000\x02^last"
            await raw.aclose()
            await first.aclose()


async def test_lines_of_a_million_tiny_groups_are_refused_before_they_are_split(
    bus: str,
) -> None:
    """1 MiB MSGs of 524,000 one-byte groups: each split in one step of 47 ms
    (and 44 MB held a line: 925 MB for 20 silent peers)."""
    line = b"2 777\x02" + b"\x80\x03" * 524_285 + b"\n"
    with trio.fail_after(30):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            await raw.handshake("GROUPS")
            steps = LongestStep()
            trio.lowlevel.add_instrument(steps)
            try:
                await raw.send(line * 8 + b"9 1\x02\n")
                refused = 0
                while (answer := await raw.line()) != b"10 1\x02":
                    refused += answer.endswith(b"over 1000 groups")
            finally:
                trio.lowlevel.remove_instrument(steps)
            assert refused == 8
            print(f"longest step {steps.longest * 1000:.1f} ms")
            assert steps.longest < 0.025, steps.longest
            await raw.aclose()

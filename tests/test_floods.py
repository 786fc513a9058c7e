"""Floods from another process cost the agent a slice of time at once, no more.

A heartbeat task in the attacked agent measures the longest the event loop
went without it (asserted under 250 ms: coarse on purpose, for CI).
"""

from __future__ import annotations

import sys

import trio

import trivy

from .heartbeat import Heartbeat

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

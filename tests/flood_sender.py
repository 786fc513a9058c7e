"""A trivy agent that sends texts at a steady rate (the GUI tests' load).

    python tests/flood_sender.py BUS PEER RATE SECONDS

It waits until the agent named PEER subscribes to ``(.*)``, sends RATE texts a second
for SECONDS (in bursts every 10 ms), prints ``sent N`` and leaves.
"""

from __future__ import annotations

import sys

import trio

import trivy
from trivy.testing import wait_for_subscription

BURST_PERIOD = 0.01


async def main(bus_address: str, peer: str, rate: int, seconds: float) -> None:
    async with trivy.open_ivy_bus("FloodSender", bus_address) as bus:
        await wait_for_subscription(bus, peer, "(.*)")
        per_burst = max(1, round(rate * BURST_PERIOD))
        bursts = round(seconds / BURST_PERIOD)
        start = trio.current_time()
        sent = 0
        for burst in range(bursts):
            for _ in range(per_burst):
                sent += 1
                await bus.send(f"flood {sent}")
            await trio.sleep_until(start + (burst + 1) * BURST_PERIOD)
        print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))

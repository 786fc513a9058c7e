"""Two trivy agents on a multicast bus; run inside a private network namespace.

Usage: ``python -m tests.multicast_scenario GROUP:PORT``. Prints one line,
``delivered <count> <groups>``, and exits 0 when the agents found each other
by multicast and exchanged a message.
"""

from __future__ import annotations

import sys

import trio

import trivy
from trivy.testing import wait_for_subscription


async def main(bus: str) -> None:
    # TTL 255 on one side: any TTL is accepted; the namespace keeps it all in
    options = {"multicast_ttl": 0, "multicast_interface": "127.0.0.1"}
    with trio.fail_after(10):
        async with trivy.open_ivy_bus("MA", bus, **options) as a:  # type: ignore[arg-type]
            sub = a.subscribe("^x (.*)")
            options_b = {**options, "multicast_ttl": 255}
            async with trivy.open_ivy_bus("MB", bus, **options_b) as b:  # type: ignore[arg-type]
                await wait_for_subscription(b, "MA", sub.regexp)
                count = await b.send("x hello")
                print("delivered", count, (await sub.receive()).groups, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])

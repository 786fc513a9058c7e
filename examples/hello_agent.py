"""A minimal agent: answers every `hello NAME` with `hi NAME`, until stopped.

Run it, then from another terminal (or any Ivy agent on the same bus) send
`hello world`::

    python examples/hello_agent.py --bus 127:2010
"""

from __future__ import annotations

import argparse
import contextlib

import trio

import trivy


async def main(bus_string: str | None, name: str) -> None:
    async with trivy.open_ivy_bus(name, bus_string, ready_message=f"{name} READY") as bus:
        print(f"{name} on {bus.bus_address}, TCP port {bus.port}; Ctrl-C to leave")
        async with bus.subscribe(r"^hello (\S+)") as hellos:
            async for match in hellos:
                print(f"{match.peer.name} says hello to {match.groups[0]}")
                await bus.send(f"hi {match.groups[0]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS or 127:2010)"
    )
    parser.add_argument("-n", "--name", default="HelloAgent")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.bus, args.name)

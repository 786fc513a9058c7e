"""A clock agent: sends `TIME <seconds>` at an interval, until told to die.

Shows timers (tasks of the bus) and DIE handling. Run it, then watch it with
`python -m trivy probe -b 127:2010 '^TIME (.*)'` and stop it with `.die Clock`::

    python examples/clock.py --bus 127:2010 --interval 1
"""

from __future__ import annotations

import argparse
import contextlib
import time

import trio

import trivy


async def main(bus_string: str | None, interval: float) -> None:
    def on_die(peer: trivy.Peer, num_id: int) -> bool:
        print(f"{peer.name} asked us to die: leaving", flush=True)
        return True  # False would refuse

    async with trivy.open_ivy_bus("Clock", bus_string, on_die=on_die) as bus:
        print(f"Clock on {bus.bus_address}, every {interval} s", flush=True)
        bus.start_timer(lambda: bus.send_nowait(f"TIME {time.time():.3f}"), interval)
        await trio.sleep_forever()  # the timer works; a DIE ends the block


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    parser.add_argument("-i", "--interval", type=float, default=1.0, help="seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.bus, args.interval)

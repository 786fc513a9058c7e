"""A bus monitor: prints who joins and leaves, and every subscription change.

Shows the event stream. Run it, then start other agents on the same bus::

    python examples/monitor.py --bus 127:2010
"""

from __future__ import annotations

import argparse
import contextlib

import trio

import trivy


def describe(event: trivy.BusEvent) -> str:
    """One line for one bus event."""
    if isinstance(event, trivy.PeerConnected):
        return f"{event.peer.name} connected from {event.peer.host}"
    if isinstance(event, trivy.PeerDisconnected):
        return f"{event.peer.name} disconnected"
    if isinstance(event, trivy.SubscriptionAdded):
        return f"{event.peer.name} subscribes {event.subscription_id}: {event.regexp}"
    if isinstance(event, trivy.SubscriptionChanged):
        return f"{event.peer.name} changes {event.subscription_id}: {event.regexp}"
    if isinstance(event, trivy.SubscriptionRemoved):
        return f"{event.peer.name} unsubscribes {event.subscription_id}: {event.regexp}"
    if isinstance(event, trivy.DirectMessage):
        return f"{event.peer.name} sent us direct message {event.num_id}: {event.text}"
    if isinstance(event, trivy.ErrorReceived):
        return f"{event.peer.name} sent an error {event.num_id}: {event.text}"
    if isinstance(event, trivy.DieReceived):
        return f"{event.peer.name} asked us to die"
    return repr(event)


async def main(bus_string: str | None) -> None:
    async with trivy.open_ivy_bus("Monitor", bus_string) as bus, bus.events() as events:
        print(f"Monitor on {bus.bus_address}", flush=True)
        async for event in events:
            print(describe(event), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.bus)

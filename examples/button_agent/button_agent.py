"""The button agent of ivy-python's documentation, the trio way.

It answers every ``BTN <hex id>`` with ``BTN_ACK <hex id>`` and greets
``hello ...`` messages on stdout. Run it::

    python button_agent.py                 # on $IVYBUS, or 127:2010
    python button_agent.py 127:2010

and press a button from another terminal: ``python -m trivy send "BTN 1f"``.
"""

from __future__ import annotations

import sys

import trio

import trivy

NAME = "007"


async def run(bus: str | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the bus until cancelled; ``task_status.started(agent)`` once subscribed.

    Started with ``await nursery.start(run, bus)``, the caller gets the
    running agent back only when its subscriptions are in place.
    """
    async with trivy.open_ivy_bus(NAME, bus) as agent:
        hello = agent.subscribe(r"^hello .*")
        buttons = agent.subscribe(r"^BTN ([a-fA-F0-9]+)")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(greet, hello)
            nursery.start_soon(acknowledge, agent, buttons)
            task_status.started(agent)


async def greet(hello: trivy.Subscription) -> None:
    async for match in hello:
        print(f"[Agent {NAME}] GOT hello from {match.peer.name}", flush=True)


async def acknowledge(agent: trivy.IvyBus, buttons: trivy.Subscription) -> None:
    async for match in buttons:
        (button_id,) = match.groups
        print(f"[Agent {NAME}] GOT BTN button_id={button_id} from {match.peer.name}", flush=True)
        await agent.send(f"BTN_ACK {button_id}")


if __name__ == "__main__":
    trio.run(run, sys.argv[1] if len(sys.argv) > 1 else None)

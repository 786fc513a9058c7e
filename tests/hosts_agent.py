"""One trivy agent in a network namespace, driven through stdin/stdout.

Usage: ``python -m tests.hosts_agent NAME BUS [OPTIONS_JSON]``. It subscribes
to ``^from (\\S+) (.*)`` and reports on stdout, one JSON object a line:
``{"event": "joined"}``, ``{"event": "connected", "name": ...}``,
``{"event": "disconnected", "name": ..., "reason": ...}``,
``{"event": "msg", "sender": ..., "text": ...}``. Each line on stdin is a
text to send (``{"event": "sent", "count": N}`` answers); EOF leaves.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

import trivy


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(name: str, bus: str, options: dict[str, Any]) -> None:
    async with trivy.open_ivy_bus(name, bus, **options) as agent:
        sub = agent.subscribe(r"^from (\S+) (.*)")
        report("joined")

        async def watch_peers() -> None:
            async with agent.events() as events:
                async for event in events:
                    if isinstance(event, trivy.PeerConnected):
                        report("connected", name=event.peer.name)
                    elif isinstance(event, trivy.PeerDisconnected):
                        report("disconnected", name=event.peer.name, reason=event.reason)

        async def watch_messages() -> None:
            async for match in sub:
                report("msg", sender=match.peer.name, text=match.groups[1])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_peers)
            nursery.start_soon(watch_messages)
            stdin = trio.wrap_file(sys.stdin)
            async for line in stdin:
                report("sent", count=await agent.send(line.rstrip("\n")))
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    trio.run(main, sys.argv[1], sys.argv[2], extra)

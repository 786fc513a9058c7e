"""The bus side of the GUI examples, with no toolkit in it.

A :class:`BusPanel` runs an agent (trio tasks, in the GUI's thread under
guest mode) and keeps what a window shows: the peers, the last texts
received, counts. The window draws it at most :data:`REDRAW_INTERVAL`
apart, so a flood of texts costs the GUI one redraw per interval, not one
per text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

import trivy

#: Seconds between two redraws at most (a flood is drawn 20 times a second).
REDRAW_INTERVAL = 0.05
#: Received texts kept for the window.
KEEP_TEXTS = 200


class BusPanel:
    """An agent and what its window shows of it."""

    def __init__(self, name: str, bus_address: str | None, regexp: str = "(.*)") -> None:
        self.name = name
        self.bus_address = bus_address
        self.regexp = regexp
        self.bus: trivy.IvyBus | None = None
        #: Names of the connected peers, sorted.
        self.peers: list[str] = []
        #: The last texts received, "SENDER: text", oldest first.
        self.texts: deque[str] = deque(maxlen=KEEP_TEXTS)
        self.received = 0
        self.sent = 0
        self.status = "joining the bus"
        self._changed = trio.Event()

    async def run(self, draw: Callable[[BusPanel], object]) -> None:
        """Join the bus and serve it until cancelled, calling ``draw(self)``
        after each change (at most every :data:`REDRAW_INTERVAL`)."""
        async with trivy.open_ivy_bus(self.name, self.bus_address) as bus:
            self.bus = bus
            self.status = f"on {bus.bus_address}, TCP port {bus.port}"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_peers, bus)
                nursery.start_soon(self._receive, bus)
                while True:
                    draw(self)
                    await self._changed.wait()
                    self._changed = trio.Event()
                    await trio.sleep(REDRAW_INTERVAL)

    def send(self, text: str) -> None:
        """Send ``text`` to the bus now (never waits: a GUI callback calls it)."""
        if self.bus is None or not text:
            return
        count = self.bus.send_nowait(text)
        self.sent += 1
        self.status = f"sent to {count} peer(s): {text}"
        self._changed.set()

    async def _watch_peers(self, bus: trivy.IvyBus) -> None:
        async with bus.events() as events:
            while True:
                self.peers = sorted(peer.name for peer in bus.peers)
                self._changed.set()
                await events.receive()

    async def _receive(self, bus: trivy.IvyBus) -> None:
        async with bus.subscribe(self.regexp) as texts:
            async for match in texts:
                self.received += 1
                self.texts.append(f"{match.peer.name}: {' '.join(match.groups)}")
                self._changed.set()

"""A task that measures how long the event loop went without running it."""

from __future__ import annotations

import time

import trio


class Heartbeat:
    """The longest the event loop went without running this task (seconds)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.longest = 0.0

    async def run(self) -> None:
        """Beat until cancelled."""
        last = time.perf_counter()
        while True:
            await trio.sleep(self.interval)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

"""How long the event loop went without running a task, or ran one step."""

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


class LongestStep(trio.abc.Instrument):
    """The longest step of any task, in CPU time (what the loop was held).

    The steps running when it is added and when it is removed are not counted.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._started: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._started is not None:
            self.longest = max(self.longest, time.thread_time() - self._started)

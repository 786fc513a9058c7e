"""Work that holds the event loop, done in slices the workers take in turns.

Binding a proxy's regexps compiles them: each proxy yielded after a slice
of its own, so 256 proxies binding at once held the loop for 256 slices a
pass of the scheduler (0.5 s, 3.1 s at worst) and the bridge read nothing
meanwhile. Under one lock, one of them works at a time: a slice a pass in all.
"""

from __future__ import annotations

import time

import trio

__all__ = ["WORK_SLICE", "TakingTurns"]

#: Seconds of work before the worker lets the others have a turn.
WORK_SLICE = 0.002


class TakingTurns:
    """Time slices of work under a lock all the workers share: :meth:`next`
    lets the others have a turn once a slice is used up."""

    def __init__(self, turns: trio.Lock) -> None:
        self._turns = turns
        self._held = False
        self._until = 0.0

    async def start(self) -> None:
        """Wait for a turn (after those waiting: trio's lock is fair)."""
        await self._turns.acquire()
        self._held = True
        self._until = time.perf_counter() + WORK_SLICE

    def end(self) -> None:
        """Give the turn up, for good."""
        if self._held:
            self._held = False
            self._turns.release()

    async def next(self) -> bool:
        """Yield to the scheduler, and to the others waiting for a turn, if the
        slice is used up; whether it did."""
        if time.perf_counter() < self._until:
            return False
        self.end()  # (handed to the next waiting, if any)
        await trio.lowlevel.checkpoint()
        await self.start()
        return True

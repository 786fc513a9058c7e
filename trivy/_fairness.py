"""Fair by time: how long a loop that serves input may hold the event loop.

Every loop that serves what others send (a peer's reader, the dispatcher
and its sync callbacks, our texts to ourselves, the accept loop, the UDP
announces) yields to the scheduler after :data:`SERVE_SLICE` seconds of
work, whatever the input: a flood of anything costs the other tasks one
slice at a time.
"""

from __future__ import annotations

from time import perf_counter

import trio

__all__ = ["SERVE_SLICE", "TimeSlice"]

#: Seconds a loop serves its input before it yields to the other tasks.
SERVE_SLICE = 0.002


class TimeSlice:
    """A loop's share of the event loop: yield once it has run a slice.

    Args:
      most: items served in one slice at most, whatever the time: for a
        loop whose items start tasks (a connection starts a session), whose
        work runs after the slice, in the same pass of the scheduler.
    """

    def __init__(self, most: int = 1 << 62) -> None:
        self._most = most
        self._since = perf_counter()
        self._served = 0

    async def share(self) -> None:
        """Before serving an item: yield to the other tasks if this slice is over."""
        self._served += 1
        if self._served > self._most or perf_counter() - self._since > SERVE_SLICE:
            await trio.lowlevel.checkpoint()
            self.restart()
            self._served = 1

    def restart(self) -> None:
        """The loop waited (for input): its slice starts anew."""
        self._since = perf_counter()
        self._served = 0

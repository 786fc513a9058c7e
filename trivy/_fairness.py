"""Fair by time: how long the loops that serve input may hold the event loop.

Every loop that serves what others send (a peer's reader, the dispatcher
and its sync callbacks, our texts to ourselves, the accept loop, the UDP
announces) yields to the scheduler once the current slice of
:data:`SERVE_SLICE` seconds is over, whatever the input.

The slice is shared by all of them (:func:`shared_slice`, one per trio
run), not one per loop: trio runs every runnable task once per pass of its
scheduler, so 100 flooding peers, each yielding after a slice of its own,
held the loop for 100 slices a pass. With one slice a pass, the first loop
to resume in a pass starts it, the others serve within what is left, and a
loop that finds it spent waits for a later pass, up to
:data:`MOST_PASSES_WAITED` (drawn at random, so that loops that started
waiting together do not all give up in the same pass): then it serves one
small unit (a short read, 16 events) anyway, so no peer starves, and a pass
lasts about one slice plus a small unit for a fraction of the loops.
"""

from __future__ import annotations

from random import randint
from time import perf_counter

import trio

__all__ = ["MOST_PASSES_WAITED", "SERVE_SLICE", "SharedSlice", "TimeSlice", "shared_slice"]

#: Seconds the loops serve their input, all together, before they yield.
SERVE_SLICE = 0.002
#: Passes a loop waits at most for time left in the slice before it serves
#: a unit anyway (1 to this many, at random: 8.5 on average).
MOST_PASSES_WAITED = 16


class SharedSlice:
    """The slice of the event loop's time the loops that serve input share.

    A pass of trio's scheduler is not visible from a task: a loop that
    resumes takes it that a new pass began (and starts the slice) when no
    slice started since it began to wait, or when no loop served anything
    for a slice's time (the slice in place is an old one).
    """

    __slots__ = ("ended", "started")

    def __init__(self) -> None:
        #: When the current slice started...
        self.started = perf_counter()
        #: ...and when a loop last stopped serving (to wait or to yield).
        self.ended = self.started

    def over(self) -> bool:
        """Whether the current slice is spent."""
        return perf_counter() - self.started > SERVE_SLICE

    def pause(self) -> float:
        """A loop stops serving to wait for input: when (for :meth:`resumed`)."""
        self.ended = now = perf_counter()
        return now

    async def resumed(self, paused_at: float) -> bool:
        """After a wait for input that began at ``paused_at`` (:meth:`pause`):
        start a slice, share the one in place, or wait for time left.

        Returns:
          whether the slice has time left (False: serve a small unit only).
        """
        now = perf_counter()
        if self.started <= paused_at or now - self.ended > SERVE_SLICE:
            self.started = now  # the first loop of this pass to serve
            return True
        if now - self.started <= SERVE_SLICE:
            return True
        return await self.yield_turn()

    async def yield_turn(self) -> bool:
        """Yield; come back when a slice has time left, or after a few passes.

        Returns:
          whether the slice has time left (False: serve a small unit only).
        """
        for _ in range(randint(1, MOST_PASSES_WAITED)):
            self.ended = yielded = perf_counter()
            await trio.lowlevel.checkpoint()
            now = perf_counter()
            if self.started <= yielded or now - self.ended > SERVE_SLICE:
                self.started = now
                return True
            if now - self.started <= SERVE_SLICE:
                return True
        return False


_SHARED = trio.lowlevel.RunVar[SharedSlice]("trivy_shared_slice")


def shared_slice() -> SharedSlice:
    """This trio run's :class:`SharedSlice` (every bus of the run shares it)."""
    try:
        return _SHARED.get()
    except LookupError:
        share = SharedSlice()
        _SHARED.set(share)
        return share


class TimeSlice:
    """A loop's turns in the shared slice: yield once it is spent.

    Args:
      most: items served in one turn at most, whatever the time: for a
        loop whose items start tasks (a connection starts a session), whose
        work runs after the slice, in the same pass of the scheduler.
    """

    def __init__(self, most: int = 1 << 62) -> None:
        self._most = most
        self._share = shared_slice()
        self._served = 0
        self._paused_at: float | None = None

    async def share(self) -> None:
        """Before serving an item: yield to the other tasks if the slice is spent."""
        if self._paused_at is not None:
            paused_at, self._paused_at = self._paused_at, None
            await self._share.resumed(paused_at)
            self._served = 0
        self._served += 1
        if self._served > self._most or self._share.over():
            await self._share.yield_turn()
            self._served = 1

    def waiting(self) -> None:
        """The loop is about to wait for input: its next turn starts after it."""
        self._paused_at = self._share.pause()

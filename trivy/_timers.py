"""Timers: tasks in the bus's nursery that call a function at an interval."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._callbacks import call_logged

__all__ = ["Timer"]

logger = logging.getLogger("trivy")

TimerCallback = Callable[[], "Awaitable[object] | object"]


def _not_negative(what: str) -> Callable[[Any, Any, float], None]:
    def check(instance: Any, attribute: Any, value: float) -> None:
        if value < 0:
            raise ValueError(f"{what} cannot be negative: {value}")

    return check


@attrs.define(eq=False)
class Timer:
    """Calls a function every ``interval`` seconds, ``count`` times (0: forever).

    Made by :meth:`trivy.IvyBus.start_timer`; it ends with the bus. The
    first tick comes one interval after the start, not at once (unlike
    ``trivy.compat.ivy.IvyTimer``, which ticks at once, as ivy-python's
    does). Setting :attr:`interval` takes effect at the next tick. An exception raised by
    the function is logged and the timer goes on.

    Attributes:
      interval: seconds between two ticks.
      count: ticks before the timer ends by itself (0 = never).
      ticks: ticks done so far.
    """

    fn: TimerCallback
    interval: float = attrs.field(validator=_not_negative("a timer interval"))
    count: int = attrs.field(default=0, validator=_not_negative("a timer count"))
    ticks: int = attrs.field(default=0, init=False)
    _cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)
    _finished: trio.Event = attrs.field(factory=trio.Event, init=False)

    @property
    def running(self) -> bool:
        """Whether the timer will tick again."""
        return not self._finished.is_set()

    def cancel(self) -> None:
        """Stop the timer; the function is not called again."""
        self._cancel_scope.cancel()

    async def wait_finished(self) -> None:
        """Wait until the timer has ended (count reached, cancelled, bus stopped)."""
        await self._finished.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer's task body (the bus starts it)."""
        try:
            with self._cancel_scope:
                task_status.started()
                while self.count == 0 or self.ticks < self.count:
                    await trio.sleep(self.interval)
                    self.ticks += 1
                    pending = call_logged(self.fn, (), "a timer")
                    if pending is not None:
                        await pending
        finally:
            self._finished.set()

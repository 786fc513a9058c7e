"""ivy-python's ``IvyTimer``, as a task of the server's bus."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .. import IvyBus, IvyIllegalStateError, Timer
from ._callback_thread import CallbackThread
from ._constants import error, warn

if TYPE_CHECKING:
    from ._server import IvyServer

_timer_ids = itertools.count(1)


class IvyTimer:
    """Calls ``callback(timer)`` every :attr:`delay` ms, :attr:`nbticks` times (0: forever).

    A task of its server's bus (:meth:`trivy.IvyBus.start_timer`): it stops
    when the server stops. The first tick is immediate, as in ivy-python.
    Setting :attr:`delay` takes effect after the next tick; setting
    :attr:`abort` to True stops the timer (the callback is not called again).
    """

    def __init__(
        self,
        server: IvyServer,
        nbticks: int,
        delay_ms: float,
        callback: Callable[[IvyTimer], Any],
    ) -> None:
        if nbticks < 0:
            raise ValueError(f"nbticks cannot be negative: {nbticks}")
        self.server = server
        self.nbticks = nbticks
        self.callback = callback
        self.id = next(_timer_ids)
        self.daemon = server.usesDaemons
        self._delay = delay_ms
        self._abort = False
        self._started = False
        self._timer: Timer | None = None  # the trivy Timer, after the first tick
        self._finished = threading.Event()
        self._thread: CallbackThread | None = None  # runs the callback

    @property
    def delay(self) -> float:
        """The delay between two ticks, in milliseconds."""
        return self._delay

    @delay.setter
    def delay(self, delay_ms: float) -> None:
        self._delay = delay_ms
        timer = self._timer
        if timer is not None:
            timer.interval = delay_ms / 1000.0  # read by the timer at its next sleep

    @property
    def abort(self) -> bool:
        """Set to True to stop the timer."""
        return self._abort

    @abort.setter
    def abort(self, value: bool) -> None:
        self._abort = value
        timer = self._timer
        if value and timer is not None:
            with suppress(IvyIllegalStateError):  # the server stopped: so did the timer
                self.server._trivy_bridge.call(lambda bus: timer.cancel())

    def start(self) -> None:
        """Start ticking. A timer on a server that is not running ends at once.

        Raises:
          RuntimeError: the timer was already started.
        """
        if self._started:
            raise RuntimeError("timers can only be started once")
        self._started = True
        try:
            self.server._trivy_bridge.start_soon(self._run)
        except IvyIllegalStateError:
            warn("IvyTimer %s: its server is not running", self.id)
            self._finished.set()

    async def _run(self, bus: IvyBus) -> None:
        # The callback runs on a thread of the timer's own, as ivy-python's
        # timers are threads: a slow one stalls neither the bus nor others.
        thread = self._thread = CallbackThread(f"IvyTimer-{self.id}", daemon=self.daemon)
        thread.start()
        try:
            if self._abort:
                return
            await self._tick()
            if self.nbticks == 1 or self._abort or not bus.running:
                return
            count = self.nbticks - 1 if self.nbticks else 0
            self._timer = bus.start_timer(self._tick, self._delay / 1000.0, count=count)
            await self._timer.wait_finished()
        finally:
            thread.stop(after=self._finished.set)  # ended once its last tick ran

    async def _tick(self) -> None:
        if self._abort:
            if self._timer is not None:
                self._timer.cancel()
            return
        assert self._thread is not None
        # Waits for the tick to be done: a slow callback makes the timer late,
        # as ivy-python's, rather than queueing ticks.
        await self._thread.call(self._call)

    def _call(self) -> None:
        if self._abort:
            return
        try:
            self.callback(self)
        except Exception:
            error("IvyTimer %s: callback raised", self.id, exc_info=True)

    def run(self) -> None:
        """Start the timer, then block until it has ended (ivy-python's timer
        is a thread, and ``run`` its body; the ticks run in the bus thread).

        Raises:
          RuntimeError: called from a callback, where it would wait for ever.
        """
        own = self._thread is not None and self._thread.in_thread()
        if (
            own
            or self.server._trivy_callbacks.in_thread()
            or self.server._trivy_bridge.in_bus_thread()
        ):
            raise RuntimeError("IvyTimer.run() would wait for itself here: use start()")
        if not self._started:
            self.start()
        self._finished.wait()

    def is_alive(self) -> bool:
        """Whether the timer was started and has not ended."""
        return self._started and not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the timer has ended (or ``timeout`` seconds).

        Raises:
          RuntimeError: called from the timer's own callback (it would wait for itself).
        """
        if self._thread is not None and self._thread.in_thread():
            raise RuntimeError("a timer's callback cannot wait for its timer to end")
        self._finished.wait(timeout)

"""The thread bridge under :class:`~trivy.compat.ivy.IvyServer`.

ivy-python's API is synchronous and thread-based; trivy's bus is a trio
task. :class:`BusThread` runs one bus under ``trio.run`` in a thread of its
own and lets any thread call into it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, TypeVar

import attrs
import trio

from .. import BusEvent, IvyBus, IvyIllegalStateError
from .._thread_counts import count_matches, share_with_threads
from ._constants import error
from ._event_order import EventOrder
from ._posted import POSTED_OVERHEAD, PostedCalls

T = TypeVar("T")

#: Opens the bus: called once per start, in the bus thread.
OpenBus = Callable[[], AbstractAsyncContextManager[IvyBus]]


@attrs.define(slots=True, eq=False)
class BusThread:
    """One trivy bus, run by ``trio.run`` in a background thread.

    Its owner is called back in the bus thread: ``on_open(bus)`` once the
    bus is up, before it has accepted any peer; ``await on_event(event)``
    for each bus event; ``on_close()`` once the bus has stopped, just before
    :attr:`stopped` is set.

    Attributes:
      stopped: set when the bus thread ends; cleared by :meth:`start`.
    """

    on_open: Callable[[IvyBus], None]
    on_event: Callable[[BusEvent], Awaitable[None]]
    on_close: Callable[[], None]
    stopped: threading.Event = attrs.field(factory=threading.Event)
    _posted: PostedCalls = attrs.field(factory=PostedCalls, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)
    _ident: int | None = attrs.field(default=None, init=False)
    # Set in the bus thread while the bus is up. Other threads only read them,
    # one attribute at a time, and cope with finding them gone (see call()).
    _token: trio.lowlevel.TrioToken | None = attrs.field(default=None, init=False)
    _bus: IvyBus | None = attrs.field(default=None, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _order: EventOrder | None = attrs.field(default=None, init=False)

    # -------------------------------------------------------------- calls
    def in_bus_thread(self) -> bool:
        """Whether the caller is the bus thread (a callback)."""
        return threading.get_ident() == self._ident

    def call(self, fn: Callable[[IvyBus], T]) -> T:
        """Run ``fn(bus)`` in the bus thread and return its result.

        From the bus thread itself it runs directly: waiting for the thread
        would deadlock a callback.

        Raises:
          IvyIllegalStateError: the bus is not running.
        """
        if self.in_bus_thread():
            return fn(self._running_bus())
        token = self._token
        if token is None:
            raise IvyIllegalStateError("not running")

        if self._posted.waiting:  # (what this thread posted before goes first)
            return self._posted.call(lambda bus: fn(self._running_bus()))
        try:
            return trio.from_thread.run_sync(lambda: fn(self._running_bus()), trio_token=token)
        except trio.RunFinishedError:
            raise IvyIllegalStateError("not running") from None

    def post(self, fn: Callable[[IvyBus], object], size: int) -> bool:
        """Have the bus thread run ``fn(bus)`` after what was posted or called
        before, without waiting for it; whether it was taken (not when the bus
        is not running). ``size``: the bytes it holds until it runs (see
        :mod:`trivy.compat._posted` for the bound)."""
        return self._posted.post(fn, size)

    def send_posted(self, text: str) -> int | None:
        """Send ``text`` from a thread of the program without waiting for the
        bus thread: its count is taken here (:mod:`trivy._thread_counts`) and
        the text posted. None when only the bus thread can count it (then
        nothing was posted), or when the bus is not running."""
        bus = self._bus
        if bus is None:
            return None
        count = count_matches(bus, text)
        # (nobody wants it: nothing to post; not posted: the bus stopped)
        if count and not self._posted.post(text, 4 * len(text) + POSTED_OVERHEAD):
            return None
        return count

    def _running_bus(self) -> IvyBus:
        bus = self._bus
        if bus is None or not bus.running:
            raise IvyIllegalStateError("not running")
        return bus

    def start_soon(self, task: Callable[[IvyBus], Awaitable[object]]) -> None:
        """Start ``task(bus)`` as a task of the bus: it is cancelled when the bus stops.

        Raises:
          IvyIllegalStateError: the bus is not running.
        """

        def start(bus: IvyBus) -> None:
            assert self._nursery is not None
            self._nursery.start_soon(task, bus)

        self.call(start)

    # ---------------------------------------------------------- lifecycle
    def start(self, open_bus: OpenBus, *, name: str, daemon: bool) -> None:
        """Start the bus thread; returns once the bus is up.

        The caller makes sure the bus is not running already.

        Raises:
          Exception: whatever opening the bus raised, re-raised here (so are
            KeyboardInterrupt and SystemExit).
        """
        if self._thread is not None:  # ended by a DIE, or by stop() from a callback
            self._thread.join()
            self._thread = None
        ready = threading.Event()
        failure: list[BaseException] = []
        self.stopped.clear()
        thread = threading.Thread(
            target=self._main, args=(open_bus, ready, failure), name=name, daemon=daemon
        )
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Stop the bus; from any thread but the bus's, wait until it has stopped.

        Raises:
          IvyIllegalStateError: the bus is not running.
        """
        thread = self._thread
        if thread is None or not self.is_alive():
            raise IvyIllegalStateError("not running")
        with suppress(IvyIllegalStateError):  # stopping already (an accepted DIE)
            self.call(lambda bus: bus.stop())
        if self.in_bus_thread():
            return  # a thread cannot join itself: it ends once the callback returns
        thread.join()
        self._thread = None

    def is_alive(self) -> bool:
        """Whether the bus thread runs and has not been told to end."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self.stopped.is_set()

    # --------------------------------------------------------- bus thread
    def _main(
        self, open_bus: OpenBus, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        self._ident = threading.get_ident()
        try:
            trio.run(self._serve, open_bus, ready)
        except Exception as exc:
            if ready.is_set():
                error("the Ivy bus thread crashed", exc_info=True)
            else:  # start() is waiting: it re-raises it
                failure.append(exc)
        except (KeyboardInterrupt, SystemExit) as exc:
            if ready.is_set():
                raise  # ends the thread, as in any thread (threading.excepthook)
            failure.append(exc)  # start() is waiting: it raises it in its thread
        finally:
            self._posted.close()
            self._bus = None
            self._token = None
            self._nursery = None
            self._order = None
            self._ident = None
            try:
                self.on_close()
            finally:  # start() and stop() must not wait for ever
                self.stopped.set()
                ready.set()

    async def _serve(self, open_bus: OpenBus, ready: threading.Event) -> None:
        async with open_bus() as bus:
            # ivy-python calls every callback: wait rather than drop them
            events = bus.events(overflow="wait")
            async with trio.open_nursery() as nursery:
                # Nothing is awaited before on_open() returns, so the bus has
                # not accepted any peer yet: what it binds is in every handshake.
                self._nursery = nursery
                self._bus = bus
                self._token = trio.lowlevel.current_trio_token()
                share_with_threads(bus)  # (before any peer: send_posted counts)
                self._posted.open(bus)
                self.on_open(bus)
                self._order = EventOrder(events, self.on_event)
                nursery.start_soon(self._order.run)
                ready.set()
                await trio.sleep_forever()

    def in_order_now(self) -> bool:
        """Whether what a peer's task hands on now is in order without
        :meth:`in_order` (no event emitted before waits to be handled)."""
        order = self._order
        return order is None or order.clear()

    async def in_order(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` once every bus event emitted before is handled
        (in the bus thread: what a peer's task does, after what it sent before)."""
        if self._order is None:
            return await fn(*args)
        return await self._order.after_events(fn, *args)

"""Callbacks in the order the bus saw their causes, across two paths.

A bound message reaches the compat server from the sending peer's own task
(a callback of the bus), while connections, regexp changes and direct
messages come through an event stream that another task follows. Followed
alone, the stream lags: a peer's messages overtook the direct message and
the regexp change it sent before them. :class:`EventOrder` closes the gap:
before a message is handed on, every event already emitted (they are in
the stream then: the bus emits them in wire order) is handled first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from .. import BusEvent, EventStream

__all__ = ["EventOrder"]

T = TypeVar("T")


class EventOrder:
    """Handles ``events`` with ``handle``, in order with :meth:`after_events`."""

    def __init__(
        self, events: EventStream[BusEvent], handle: Callable[[BusEvent], Awaitable[None]]
    ) -> None:
        self._events = events
        self._handle = handle
        self._taken: deque[BusEvent] = deque()  # taken from the stream, not handled yet
        self._lock = trio.Lock()

    async def run(self) -> None:
        """Follow the stream until it ends (a task of the bus)."""
        async with self._events:
            while True:
                try:
                    event = await self._events.receive()
                except trio.EndOfChannel:
                    return
                # (in the step that took it: ahead of whatever is taken later)
                self._taken.append(event)
                async with self._lock:
                    await self._catch_up()

    def clear(self) -> bool:
        """Whether no event waits nor is being handled: what comes now may be
        handed on at once, in the same step (without :meth:`after_events`)."""
        return not self._taken and not len(self._events) and not self._lock.locked()

    async def after_events(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Handle every event emitted so far, then ``await fn(*args)``."""
        lock = self._lock
        try:  # (no checkpoint when free: a scheduler pass per message cost 20 µs)
            lock.acquire_nowait()
        except trio.WouldBlock:
            async with lock:
                await self._catch_up()
                return await fn(*args)
        try:
            if self._taken or len(self._events):
                await self._catch_up()
            return await fn(*args)
        finally:
            lock.release()

    async def _catch_up(self) -> None:
        while True:
            if self._taken:
                event = self._taken.popleft()
            else:
                try:
                    event = self._events.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    return
            await self._handle(event)

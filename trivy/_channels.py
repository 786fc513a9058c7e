"""Receive channels that the bus fills: subscriptions and event streams.

A plain ``trio.open_memory_channel`` costs two scheduler checkpoints per
item, which halves the message rate. These channels keep their own buffer:
the peer's reader task appends to it without switching tasks, and the
consumer drains it, checkpointing once per batch or once its time slice is
over, whichever comes first (and whenever it has to wait). A full buffer
makes the reader wait, which stops reading from that peer's socket:
backpressure reaches the sender through TCP.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Generic, TypeVar

import trio

# (per message: trio.X is a load CPython 3.11 leaves generic, as trio has a
# module __getattr__)
from trio.lowlevel import checkpoint_if_cancelled

from ._events import Match
from ._fairness import SERVE_SLICE

__all__ = ["BufferedReceiveChannel", "Subscription"]

T = TypeVar("T")

#: Items larger than this are counted against a channel's ``max_bytes``
#: (their size: the characters of their text, four times when it is not
#: ASCII, and a match's groups' objects); smaller ones are bounded by
#: ``max_buffer`` alone (1000 of them hold 4 MiB at most), and cost no
#: bookkeeping.
BIG_ITEM = 4096
#: Default ``max_bytes``: the size of the big items a channel holds before
#: its producer waits (or, for an event stream, drops).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Items a consumer takes from a non-empty buffer between two checkpoints at
#: most: enough to make the checkpoint's cost vanish (a peer's reader and
#: its consumer take turns by this many; 256 received 29 % more a second
#: than 64, and 1024 less than 256: the items of a turn no longer fit in the
#: CPU's caches). The time slice bounds a slow consumer sooner.
ITEMS_PER_CHECKPOINT = 256
#: Between two checkpoints, every this many items taken a call checks for
#: cancellation (see :data:`trivy._routing.CANCEL_CHECK_EVERY`)
#: and whether the consumer has run for ``SERVE_SLICE`` since it last
#: yielded: then it yields now. A consumer whose items take long thus lets
#: the other tasks run every this many items.
CANCEL_CHECK_EVERY = 16


class BufferedReceiveChannel(trio.abc.ReceiveChannel[T], Generic[T]):
    """A receive channel over a bounded deque that the bus appends to.

    Args:
      max_buffer: items held before the producer has to wait.
      on_close: called once when the consumer closes the channel.
      max_bytes: characters of big items (over :data:`BIG_ITEM`) held
        before the producer has to wait; one item is always taken.
    """

    def __init__(
        self,
        max_buffer: int,
        on_close: Callable[[], None] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes cannot be negative: {max_bytes}")
        self.max_buffer = max_buffer
        self.max_bytes = max_bytes
        self._buffer: deque[T] = deque()
        # The big items in the buffer, in order, with their sizes: only they
        # are counted, so small ones cost one comparison each.
        self._big: deque[tuple[T, int]] = deque()
        self._big_bytes = 0
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()
        self._closed = False  # by the consumer
        self._ended = False  # by the bus: no more items will come
        self._since_checkpoint = 0
        # The count at which the next call checks: 0, then every
        # CANCEL_CHECK_EVERY (compared, not masked: CPython 3.11 specializes
        # an int ==, not an int &); it moves on only once a check passed.
        self._check_at = 0
        self._yielded_at = perf_counter()  # when the consumer last yielded
        self._on_close = on_close
        # Plain counters of parked tasks: checked once per item, where a
        # ParkingLot's own __bool__ would cost a Python call. A waker counts
        # off only the tasks it did wake: a cancelled waiter leaves the lot
        # at once but counts itself off only when it runs again, and an
        # item put in between must not count it off twice (the next waiter
        # would never be woken).
        self._consumers_waiting = 0
        self._producers_waiting = 0

    # ---------------------------------------------------------- producer side
    def _put_nowait(self, item: T, size: int = 0) -> bool:
        """Append an item of ``size`` characters; False (not taken) when closed or full.

        Called once per message: written out rather than through
        :meth:`_put_anyway`, to save a call on the hot path.
        """
        if self._closed or self._ended or len(self._buffer) >= self.max_buffer:
            return False
        if size > BIG_ITEM:
            if self._buffer and self._big_bytes + size > self.max_bytes:
                return False
            self._big.append((item, size))
            self._big_bytes += size
        self._buffer.append(item)
        if self._consumers_waiting and self._readable.unpark():
            self._consumers_waiting -= 1
        return True

    def _put_many(self, items: list[T]) -> int:
        """Append small items (within :data:`BIG_ITEM`) while there is room.

        Returns how many were taken: all of them when the channel is closed
        or ended (dropped, as :meth:`_put` drops them).
        """
        if self._closed or self._ended:
            return len(items)
        room = self.max_buffer - len(self._buffer)
        if room < len(items):
            if room <= 0:
                return 0
            items = items[:room]
        self._buffer.extend(items)
        if self._consumers_waiting:
            woken = self._readable.unpark(count=min(len(items), self._consumers_waiting))
            self._consumers_waiting -= len(woken)
        return len(items)

    def _put_anyway(self, item: T, size: int = 0) -> None:
        """Append even past the limits (dropped only if closed or ended)."""
        if self._closed or self._ended:
            return
        if size > BIG_ITEM:
            self._big.append((item, size))
            self._big_bytes += size
        self._buffer.append(item)
        if self._consumers_waiting and self._readable.unpark():
            self._consumers_waiting -= 1

    def _has_room(self, size: int) -> bool:
        if len(self._buffer) >= self.max_buffer:
            return False
        return size <= BIG_ITEM or not self._buffer or self._big_bytes + size <= self.max_bytes

    async def _put(self, item: T, size: int = 0) -> None:
        """Append an item, waiting while the buffer is full; dropped if closed."""
        while not self._has_room(size) and not (self._closed or self._ended):
            self._producers_waiting += 1  # the one who unparks us counts us off
            try:
                await self._writable.park()
            except BaseException:
                self._producers_waiting -= 1
                raise
        self._put_anyway(item, size)  # there is room now (or it is closed: dropped)

    def _end(self) -> None:
        """No more items: the consumer gets EndOfChannel once it drained them."""
        self._ended = True
        self._wake_all()

    def _wake_all(self) -> None:
        self._consumers_waiting -= len(self._readable.unpark_all())
        self._producers_waiting -= len(self._writable.unpark_all())

    # ---------------------------------------------------------- consumer side
    def receive_nowait(self) -> T:
        """Take one buffered item.

        Raises:
          trio.WouldBlock: nothing is buffered.
          trio.EndOfChannel: the bus stopped and everything was taken.
          trio.ClosedResourceError: this channel was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this channel was closed")
        if self._buffer:
            item = self._buffer.popleft()
            if self._big and item is self._big[0][0]:
                self._big_bytes -= self._big.popleft()[1]
            if self._producers_waiting and self._writable.unpark():
                self._producers_waiting -= 1
            return item
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Wait for and return the next item.

        It yields to the scheduler when it has to wait and once every
        ``ITEMS_PER_CHECKPOINT`` items otherwise, so a consumer that never
        waits still lets other tasks run. A cancel point: the first call after
        it yielded, and every ``CANCEL_CHECK_EVERY``-th, checks (the others
        return a buffered item at once).
        """
        since = self._since_checkpoint
        if since == self._check_at:
            await self._check_cancelled_and_slice()
            self._check_at = since + CANCEL_CHECK_EVERY
        while True:
            if self._buffer and self._since_checkpoint < ITEMS_PER_CHECKPOINT:
                self._since_checkpoint += 1
                return self.receive_nowait()
            if self._buffer or self._ended or self._closed:
                await trio.lowlevel.checkpoint()
                if not self._buffer and (self._ended or self._closed):
                    return self.receive_nowait()  # raises: ended or closed
                # (empty but open: another consumer took the items; wait again)
            else:
                await self._wait_for_item()
            # The item taken next counts as 0: the call after it checks for a
            # cancellation that came while we were not running.
            self._since_checkpoint = -1
            self._check_at = 0
            self._yielded_at = perf_counter()

    async def _check_cancelled_and_slice(self) -> None:
        """Every CANCEL_CHECK_EVERY items: cancelled? has this slice run out?"""
        await checkpoint_if_cancelled()
        if self._since_checkpoint and perf_counter() - self._yielded_at > SERVE_SLICE:
            self._since_checkpoint = ITEMS_PER_CHECKPOINT  # yield before the next item

    async def _wait_for_item(self) -> None:
        self._consumers_waiting += 1  # the one who unparks us counts us off
        try:
            await self._readable.park()
        except BaseException:
            self._consumers_waiting -= 1
            raise

    async def __anext__(self) -> T:
        # The common case inline (no nested receive() coroutine): an item is
        # buffered and no checkpoint is due.
        since = self._since_checkpoint
        if since == self._check_at:
            await self._check_cancelled_and_slice()
            self._check_at = since + CANCEL_CHECK_EVERY
            since = self._since_checkpoint
        buffer = self._buffer
        if buffer and since < ITEMS_PER_CHECKPOINT:
            self._since_checkpoint = since + 1
            item = buffer.popleft()
            if self._big and item is self._big[0][0]:
                self._big_bytes -= self._big.popleft()[1]
            if self._producers_waiting and self._writable.unpark():
                self._producers_waiting -= 1
            return item
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Wait for at least one item; return all buffered (up to ``max_items``).

        Always one checkpoint, however many items come back.
        """
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        while True:
            while not (self._buffer or self._ended or self._closed):
                await self._wait_for_item()
            await trio.lowlevel.checkpoint()
            if self._buffer or self._ended or self._closed:
                break  # else another consumer took the items meanwhile
        first = self.receive_nowait()  # raises if ended/closed with nothing left
        count = len(self._buffer) if max_items is None else min(max_items - 1, len(self._buffer))
        items = [first]
        popleft = self._buffer.popleft
        items.extend(popleft() for _ in range(count))
        big = self._big
        for item in items if big else ():
            if big and item is big[0][0]:
                self._big_bytes -= big.popleft()[1]
        self._since_checkpoint = self._check_at = 0
        self._yielded_at = perf_counter()
        if self._producers_waiting:
            self._producers_waiting -= len(self._writable.unpark_all())
        return items

    def close(self) -> None:
        """Close synchronously (what :meth:`aclose` does, minus the checkpoint)."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._big.clear()
        self._big_bytes = 0
        self._wake_all()
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        """Close the channel; buffered items are discarded."""
        self.close()
        await trio.lowlevel.checkpoint()

    def __len__(self) -> int:
        """How many items are buffered."""
        return len(self._buffer)


class Subscription(BufferedReceiveChannel[Match]):
    """One of our subscriptions: an async iterable of :class:`~trivy.Match`.

    Made by :meth:`trivy.IvyBus.subscribe`; ADD_REGEXP went to every peer
    when it was made, DEL_REGEXP goes when it is closed (leaving its
    ``async with`` block, or :meth:`aclose`).

    Attributes:
      id: the subscription id peers use in their MSGs.
      regexp: the regexp sent to peers (intervals expanded).
    """

    def __init__(
        self,
        sub_id: int,
        regexp: str,
        max_buffer: int,
        on_close: Callable[[], None],
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(max_buffer, on_close, max_bytes)
        self.id = sub_id
        self.regexp = regexp

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.regexp!r}>"

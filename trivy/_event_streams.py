"""Bus events to the application: event streams, and the hub that fills them.

A stream that is full must not stall the peers (the hub is called from
their reader tasks). By default a full stream drops what does not fit and
counts it; the lifecycle events (a peer connected or disconnected, a DIE,
congestion) are kept up to twice the buffer, since losing one would leave
the application with a wrong view of the bus. A stream opened with
``overflow="wait"`` makes the peers' readers wait for room instead:
lossless, at the price that one slow reader slows every peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from ._channels import DEFAULT_MAX_BYTES, BufferedReceiveChannel
from ._events import (
    BusEvent,
    Congestion,
    DieReceived,
    DirectMessage,
    ErrorReceived,
    PeerConnected,
    PeerDisconnected,
)

__all__ = ["EventHub", "EventStream", "StreamOverflow"]

T = TypeVar("T")
E = TypeVar("E", BusEvent, DirectMessage)
StreamOverflow = Literal["drop", "wait"]
_LIFECYCLE = (PeerConnected, PeerDisconnected, DieReceived, Congestion)


class EventStream(BufferedReceiveChannel[T], Generic[T]):
    """A stream of bus events (or direct messages), for as long as it is open.

    Attributes:
      overflow: ``"drop"`` (the default) or ``"wait"`` when the stream is full.
      dropped: how many events did not fit and were dropped.
    """

    def __init__(
        self,
        max_buffer: int,
        on_close: Callable[[], None],
        overflow: StreamOverflow,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if overflow not in ("drop", "wait"):
            raise ValueError(f"overflow must be 'drop' or 'wait', not {overflow!r}")
        super().__init__(max_buffer, on_close, max_bytes)
        self.overflow: StreamOverflow = overflow
        self.dropped = 0

    def _offer(self, item: T, *, keep: bool, size: int = 0) -> None:
        """Append without waiting; past the limit only if ``keep``, up to twice it."""
        if self._put_nowait(item, size):
            return
        if keep and len(self._buffer) < 2 * self.max_buffer:
            self._put_anyway(item, size)
        elif not (self._closed or self._ended):
            self.dropped += 1


class EventHub:
    """Fans bus events out to every open event stream (and direct messages to theirs)."""

    def __init__(self) -> None:
        self._event_streams: list[EventStream[BusEvent]] = []
        self._direct_streams: list[EventStream[DirectMessage]] = []
        self._ended = False

    def events(
        self, max_buffer: int, overflow: StreamOverflow, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> EventStream[BusEvent]:
        """A new stream of every bus event, until it is closed (or the bus stops)."""
        return self._open(self._event_streams, max_buffer, overflow, max_bytes)

    def direct_messages(
        self, max_buffer: int, overflow: StreamOverflow, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> EventStream[DirectMessage]:
        """A new stream of the direct messages, until it is closed (or the bus stops)."""
        return self._open(self._direct_streams, max_buffer, overflow, max_bytes)

    def _open(
        self,
        streams: list[EventStream[E]],
        max_buffer: int,
        overflow: StreamOverflow,
        max_bytes: int,
    ) -> EventStream[E]:
        stream: EventStream[E] = EventStream(
            max_buffer, lambda: streams.remove(stream), overflow, max_bytes
        )
        streams.append(stream)
        if self._ended:
            stream._end()
        return stream

    async def emit(self, event: BusEvent) -> None:
        """Give ``event`` to every stream: dropped or waited for where one is full."""
        keep = isinstance(event, _LIFECYCLE)
        size = 0
        if isinstance(event, (DirectMessage, ErrorReceived)):  # (4 bytes a character past ASCII)
            size = len(event.text) if event.text.isascii() else 4 * len(event.text)
        if isinstance(event, DirectMessage):
            for direct in list(self._direct_streams):  # one may close while we wait
                if direct.overflow == "wait":
                    await direct._put(event, size)
                else:
                    direct._offer(event, keep=keep, size=size)
        for stream in list(self._event_streams):
            if stream.overflow == "wait":
                await stream._put(event, size)
            else:
                stream._offer(event, keep=keep, size=size)

    def emit_nowait(self, event: BusEvent) -> None:
        """Give ``event`` to every stream now (from places that cannot wait)."""
        for stream in self._event_streams:
            stream._offer(event, keep=True)

    def end_all(self) -> None:
        """The bus stops: every stream ends once drained, and so do later ones."""
        self._ended = True
        for stream in self._event_streams:
            stream._end()
        for direct in self._direct_streams:
            direct._end()

"""What goes to each open page, and the memory it may hold, bounded.

Every update goes to every page as one shared string; a page that is
behind has updates dropped and, once it has room, gets a snapshot (shared
too) and a note of how many it missed. The bytes waiting are bounded per
page (:data:`FEED_BYTES`) and for all the pages together
(:data:`FEEDS_BYTES`), each string counted once however many pages it
waits for; a page is written a piece at a time (:data:`WRITE_PIECE`), so
one that does not read holds no copy of a whole snapshot; and a page that
took nothing for :data:`PAGE_TIMEOUT` while updates waited is closed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from ._model import BusModel

__all__ = [
    "FEEDS_BYTES",
    "FEED_BUFFER",
    "FEED_BYTES",
    "PAGE_TIMEOUT",
    "WRITE_PIECE",
    "Feed",
    "Viewer",
]

#: Updates held for one page; past them, updates are dropped for it (a
#: slow or stalled tab), counted, and the next one it gets is a snapshot.
FEED_BUFFER = 32
#: ...and bytes of them (one is always taken): pages that never read, fed
#: texts of astral characters (12 bytes each in JSON), held 2.2 GB.
FEED_BYTES = 8 * 1024 * 1024
#: Bytes waiting for all the pages together, each string counted once:
#: each stalled page held its own snapshots (20 MB apiece with astral
#: texts), 1.6 GB for 32 pages.
FEEDS_BYTES = 64 * 1024 * 1024
#: Characters handed to the server at a time: what a page that does not
#: read holds in the server's buffers, not its whole snapshot again.
WRITE_PIECE = 64 * 1024
#: Seconds a page may take nothing while updates wait for it: then it is
#: closed (a browser reconnects by itself), and what waited for it freed;
#: and seconds its connection may take no byte (``TCP_USER_TIMEOUT``): the
#: server writes to it shielded from cancellation.
PAGE_TIMEOUT = 30.0


class _Held:
    """The strings waiting for the pages, each counted once (by identity)."""

    def __init__(self) -> None:
        self.size = 0
        self._counts: dict[int, tuple[str, int]] = {}  # (the string kept: ids stay unique)

    def fits(self, payloads: tuple[str, ...]) -> bool:
        new = sum(len(p) for p in payloads if id(p) not in self._counts)
        return self.size + new <= FEEDS_BYTES

    def take(self, payload: str) -> None:
        _, count = self._counts.get(id(payload), (payload, 0))
        if not count:
            self.size += len(payload)
        self._counts[id(payload)] = (payload, count + 1)

    def release(self, payload: str) -> None:
        _, count = self._counts[id(payload)]
        if count == 1:
            del self._counts[id(payload)]
            self.size -= len(payload)
        else:
            self._counts[id(payload)] = (payload, count - 1)


class Viewer:
    """One open page: its queue of updates."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[str](FEED_BUFFER)
        self.held = 0  # characters of the updates waiting for it
        self.dropped = 0
        self.resync = False
        #: When it last took an update, or had none waiting.
        self.served_at = trio.current_time()
        #: Its response's scope: cancelled to close a page that takes nothing.
        self.scope = trio.CancelScope()
        #: What is being written to it (taken from the queue, still held).
        self.writing: str | None = None


class Feed:
    """The open pages, and what goes to each."""

    def __init__(self, model: BusModel) -> None:
        self.model = model
        #: The open pages, and those being opened (counted from their request on).
        self.viewers: set[Viewer] = set()
        self._snapshot: str | None = None
        self._snapshot_size = 0  # (of the last one made)
        self._held = _Held()

    @property
    def held_bytes(self) -> int:
        """Characters waiting for the pages, each string counted once."""
        return self._held.size

    def snapshot(self) -> str:
        """The model's snapshot, as JSON: made at most once between two updates
        (the updates that follow carry whatever changed since the last one)."""
        if self._snapshot is None:
            self._snapshot = json.dumps(self.model.snapshot(trio.current_time()))
            self._snapshot_size = len(self._snapshot)
        return self._snapshot

    def publish(self, update: dict[str, Any]) -> None:
        """One update to every page; a page that is behind gets it dropped."""
        payload = json.dumps(update)
        self._snapshot = None  # (taken before this update: it may miss its changes)
        now = trio.current_time()
        for viewer in self.viewers:
            if viewer.held and now - viewer.served_at > PAGE_TIMEOUT:
                viewer.scope.cancel()  # (its response ends, and gives all back)
                continue
            if not viewer.held:
                viewer.served_at = now
            if viewer.resync:  # (it missed updates: all of it again, once it has room)
                note = f'{{"type": "dropped", "dropped": {viewer.dropped}}}'
                # (once it took all it had, and the last snapshot would fit all
                # the pages: a snapshot is not made for nothing at every tick)
                if (
                    not viewer.held
                    and self._held.size + self._snapshot_size <= FEEDS_BYTES
                    and self._queue(viewer, (note, self.snapshot()))
                ):
                    viewer.resync = False
                    continue
                viewer.dropped += 1
            elif not self._queue(viewer, (payload,)):
                viewer.dropped += 1
                viewer.resync = True

    def _queue(self, viewer: Viewer, payloads: tuple[str, ...]) -> bool:
        """Queue ``payloads`` for ``viewer`` if it and all the pages have room."""
        size = sum(map(len, payloads))
        room = FEED_BUFFER - viewer.send.statistics().current_buffer_used
        if room < len(payloads) or (viewer.held and viewer.held + size > FEED_BYTES):
            return False
        if not self._held.fits(payloads):
            return False
        for payload in payloads:
            viewer.send.send_nowait(payload)  # (room checked)
            self._held.take(payload)
        viewer.held += size
        return True

    def open_page(self) -> tuple[Viewer, str] | None:
        """A new page and its first snapshot; None if the pages hold too much."""
        first = self.snapshot()
        if not self._held.fits((first,)):
            return None
        viewer = Viewer()
        self.viewers.add(viewer)
        self._held.take(first)
        viewer.writing = first  # (to be written, held until then)
        return viewer, first

    async def stream(self, viewer: Viewer, first: str) -> AsyncIterator[str]:
        """The page's server-sent events, a piece at a time (``first``: its snapshot)."""
        viewer.writing = first
        while True:
            payload = viewer.writing
            yield "data: "
            for start in range(0, len(payload), WRITE_PIECE):
                yield payload[start : start + WRITE_PIECE]
            yield "\n\n"
            viewer.writing = None
            self._held.release(payload)
            try:
                payload = await viewer.receive.receive()
            except trio.EndOfChannel:
                return
            viewer.writing = payload
            viewer.held -= len(payload)
            viewer.served_at = trio.current_time()

    def close_page(self, viewer: Viewer) -> None:
        """The page's response ended: its place and what waited for it are given back."""
        self.viewers.discard(viewer)
        viewer.send.close()
        if viewer.writing is not None:  # (its response ended in the middle of it)
            self._held.release(viewer.writing)
            viewer.writing = None
        while True:
            try:
                payload = viewer.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            viewer.held -= len(payload)
            self._held.release(payload)

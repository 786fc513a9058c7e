"""What goes to each open page, and the memory it may hold, bounded.

Every update goes to every page as one shared message (its JSON, in
pieces: see ``_json_slices``); a page that is behind has updates dropped
and, once it has room, gets a snapshot (shared too) and a note of how
many it missed. The bytes waiting are bounded per
page (:data:`FEED_BYTES`) and for all the pages together
(:data:`FEEDS_BYTES`), each message counted once however many pages it
waits for; a page is written a piece at a time (:data:`WRITE_PIECE`), so
one that does not read holds no copy of a whole snapshot; and a page that
took nothing for :data:`PAGE_TIMEOUT` while updates waited is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio

from ._json_slices import Encoded, dumps_in_slices
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
    """The messages waiting for the pages, each counted once (by identity)."""

    def __init__(self) -> None:
        self.size = 0
        self._counts: dict[int, tuple[Encoded, int]] = {}  # (the message kept: ids stay unique)

    def fits(self, payloads: tuple[Encoded, ...]) -> bool:
        new = sum(len(p) for p in payloads if id(p) not in self._counts)
        return self.size + new <= FEEDS_BYTES

    def take(self, payload: Encoded) -> None:
        _, count = self._counts.get(id(payload), (payload, 0))
        if not count:
            self.size += len(payload)
        self._counts[id(payload)] = (payload, count + 1)

    def release(self, payload: Encoded) -> None:
        _, count = self._counts[id(payload)]
        if count == 1:
            del self._counts[id(payload)]
            self.size -= len(payload)
        else:
            self._counts[id(payload)] = (payload, count - 1)


class Viewer:
    """One open page: its queue of updates."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Encoded](FEED_BUFFER)
        self.held = 0  # characters of the updates waiting for it
        self.dropped = 0
        self.resync = False
        #: When it last took an update, or had none waiting.
        self.served_at = trio.current_time()
        #: Its response's scope: cancelled to close a page that takes nothing.
        self.scope = trio.CancelScope()
        #: What is being written to it (taken from the queue, still held).
        self.writing: Encoded | None = None


class _Making:
    """A snapshot being encoded, for the pages that open meanwhile."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.done = trio.Event()
        self.text: Encoded | None = None


class Feed:
    """The open pages, and what goes to each."""

    def __init__(self, model: BusModel) -> None:
        self.model = model
        #: The open pages, and those being opened (counted from their request on).
        self.viewers: set[Viewer] = set()
        self._generation = 0  # (updates published so far)
        self._snapshot: tuple[int, Encoded] | None = None  # (of which generation, its JSON)
        self._making: _Making | None = None
        self._snapshot_size = 0  # (of the last one made)
        self._held = _Held()

    @property
    def held_bytes(self) -> int:
        """Characters waiting for the pages, each message counted once."""
        return self._held.size

    async def publish(self, update: dict[str, Any]) -> None:
        """One update to every page; a page that is behind gets it dropped.

        The pages it goes to, and the snapshot of those that missed
        updates, are taken at once, with the update: a page that opens while
        they are encoded gets a snapshot taken after it, not this update.
        """
        self._generation += 1
        now = trio.current_time()
        viewers = list(self.viewers)
        snapshot = None
        # (once a page took all it had, and the last snapshot would fit all the
        # pages: a snapshot is not made for nothing at every update)
        if (
            self._making is None  # (else those pages wait for a later update)
            and self._held.size + self._snapshot_size <= FEEDS_BYTES
            and any(viewer.resync and not viewer.held for viewer in viewers)
        ):
            snapshot = await self._make_snapshot()  # (taken before anything yields)
        payload = await dumps_in_slices(update)
        for viewer in viewers:
            if viewer not in self.viewers:  # (closed meanwhile)
                continue
            if viewer.held and now - viewer.served_at > PAGE_TIMEOUT:
                viewer.scope.cancel()  # (its response ends, and gives all back)
                continue
            if not viewer.held:
                viewer.served_at = now
            if viewer.resync:  # (it missed updates: all of it again, once it has room)
                note = Encoded((f'{{"type": "dropped", "dropped": {viewer.dropped}}}',))
                if (
                    snapshot is not None
                    and not viewer.held
                    and self._queue(viewer, (note, snapshot))
                ):
                    viewer.resync = False
                    continue
                viewer.dropped += 1
            elif not self._queue(viewer, (payload,)):
                viewer.dropped += 1
                viewer.resync = True

    async def _snapshot_now(self) -> Encoded:
        """The model's snapshot, as JSON, taken no earlier than the last
        update: made at most once between two updates, shared by the pages
        that open meanwhile (those updates carry whatever changed since)."""
        while True:
            generation = self._generation
            if self._snapshot_ready():
                return self._snapshot[1]  # type: ignore[index]
            making = self._making
            if making is None:
                return await self._make_snapshot()
            # (one is encoded at a time: this one, or then one of now)
            await making.done.wait()
            if making.generation == generation and making.text is not None:
                return making.text

    def _snapshot_ready(self) -> bool:
        return self._snapshot is not None and self._snapshot[0] == self._generation

    async def _make_snapshot(self) -> Encoded:
        making = self._making = _Making(self._generation)
        try:
            making.text = await dumps_in_slices(self.model.snapshot(trio.current_time()))
        finally:
            if self._making is making:
                self._making = None
            making.done.set()
        self._snapshot_size = len(making.text)
        if self._generation == making.generation:  # (no update since it was taken)
            self._snapshot = (making.generation, making.text)
        return making.text

    def _queue(self, viewer: Viewer, payloads: tuple[Encoded, ...]) -> bool:
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

    async def open_page(self) -> tuple[Viewer, Encoded] | None:
        """A new page and its first snapshot; None if the pages hold too much.

        The page is counted from the call on, before anything yields.
        """
        if self._held.size + self._snapshot_size > FEEDS_BYTES and not self._snapshot_ready():
            return None  # (the snapshot it needs would not fit: not made for nothing)
        viewer = Viewer()
        self.viewers.add(viewer)
        try:
            first = await self._snapshot_now()
        except BaseException:
            self.close_page(viewer)
            raise
        if not self._held.fits((first,)):
            self.close_page(viewer)
            return None
        self._held.take(first)
        viewer.writing = first  # (to be written, held until then)
        return viewer, first

    async def stream(self, viewer: Viewer, first: Encoded) -> AsyncIterator[str]:
        """The page's server-sent events, a piece at a time (``first``: its snapshot)."""
        viewer.writing = first
        while True:
            payload = viewer.writing
            yield "data: "
            for piece in payload.pieces:
                for start in range(0, len(piece), WRITE_PIECE):
                    yield piece[start : start + WRITE_PIECE]
                    viewer.served_at = trio.current_time()  # (it takes it: a slow link)
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
        if not self.viewers:
            self._snapshot = None  # (made for pages: none left to share it)
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

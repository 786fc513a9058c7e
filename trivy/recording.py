"""Record a bus and replay it, from trio code (``trivy record`` / ``trivy replay``).

Record every text the agents of a bus send, and their comings and goings,
to a file (JSON Lines, see ``trivy._recording_format``; gzip-compressed
when the name ends with ``.gz``)::

    async with trio.open_nursery() as nursery:
        recorder = await nursery.start(record, "scenario.jsonl", "127:2010")
        ...
        nursery.cancel_scope.cancel()  # the file is complete and valid

and play it back onto a bus, each sender played by an agent of its name,
with the original timing (or faster)::

    header, records = load_recording("scenario.jsonl")
    await replay(records, "127:2010", speed=10, wait_for=["MyDisplay"])
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs
import trio

from ._channels import Subscription
from ._events import (
    Match,
    Peer,
    PeerConnected,
    PeerDisconnected,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)
from ._fairness import SERVE_SLICE
from ._matching import safe_search
from ._open import open_ivy_bus
from ._options import BusOptionsArgs
from ._playlist import FilePlaylist, ListPlaylist, open_recording, read_records, select
from ._recording_format import Record, RecordingError, encode_header, encode_record
from ._recording_format import json_string as _json_string
from ._replaying import MAX_AGENTS, ReplayStats, replay, too_many_senders

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MAX_AGENTS",
    "FilePlaylist",
    "ListPlaylist",
    "Record",
    "RecordingError",
    "RecordingStats",
    "ReplayStats",
    "load_recording",
    "open_recording",
    "record",
    "replay",
    "select",
    "too_many_senders",
]

#: What the recorder subscribes to by default: every text.
EVERYTHING = "^(.*)$"
#: Seconds between two flushes of a recording: what a ``kill -9`` can lose.
FLUSH_EVERY = 1.0
#: Agent names a recorder's stats keep (peers that come and go with new
#: names would grow them for ever).
AGENTS_KEPT = 10_000


def load_recording(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """The header and records of a recording file, in memory.

    (``trivy replay`` streams the file instead: :class:`FilePlaylist`.)

    Raises:
      RecordingError: not a recording, an unknown version, or a corrupt or
        truncated line (named by its number).
      OSError: the file cannot be read.
    """
    items = list(read_records(path))
    header = items[0]
    assert isinstance(header, dict)
    return header, [item for item in items[1:] if isinstance(item, Record)]


@attrs.define
class RecordingStats:
    """What a recorder has written so far."""

    messages: int = 0
    events: int = 0
    #: The names of the agents seen (the first :data:`AGENTS_KEPT`).
    agents: set[str] = attrs.field(factory=set)
    started: float = 0.0
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def wait_messages(self, count: int) -> None:
        """Wait until at least ``count`` messages are recorded."""
        while self.messages < count:
            await self.changed.wait()


async def record(
    path: str | Path,
    bus: str | None = None,
    *,
    name: str = "TRIVYRECORD",
    regexps: Sequence[str] = (),
    on_record: Callable[[RecordingStats], None] | None = None,
    task_status: trio.TaskStatus[RecordingStats] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[BusOptionsArgs],
) -> None:
    """Join ``bus`` as ``name`` and record it to ``path`` until cancelled (or a DIE).

    Every text an agent sends (only those that one of ``regexps`` finds,
    if given) is recorded whole, once, with its sender; so are agents
    joining and leaving, and their subscriptions. Nothing is dropped: if
    the file cannot keep up, the senders wait (trivy's backpressure). The
    writes are made from the trio loop, buffered and flushed every second
    (by a timer: a quiet bus loses nothing received a second ago):
    a slow disk slows the program that records, not only its senders (the
    ``trivy record`` command is a process of its own). Leaving by a DIE or a
    cancellation writes what was received and closes the file complete;
    an error writing it (disk full) ends the recording with that OSError,
    its ``filename`` set to ``path`` (an OSError without one is the bus's).
    ``task_status.started`` gives the :class:`RecordingStats` once the agent
    is on the bus.
    """
    keep = [safe_search(regexp) for regexp in regexps]  # (run on texts peers chose)
    # The bus first: a bus that cannot be joined leaves no file behind.
    async with (
        open_ivy_bus(name, bus, **options) as ivy,
        ivy.events(overflow="wait") as events,
    ):
        with _recording_file(path) as file:
            started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            stats = RecordingStats(started=trio.current_time())
            lines = _Lines(file, str(path), stats, keep, on_record)
            lines.header(encode_header(str(ivy.bus_address), started))
            sub = ivy.subscribe(EVERYTHING)  # one subscription: each text recorded once
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_record_texts, sub, lines)
                    nursery.start_soon(_record_events, events, lines)
                    nursery.start_soon(_flush_every, lines, FLUSH_EVERY)
                    task_status.started(stats)
                    await trio.sleep_forever()
            finally:
                if not lines.failed:
                    # Leaving (a DIE, Ctrl-C): what was received is still written.
                    lines.events(_drain(events))
                    lines.texts(_drain(sub))


async def _flush_every(lines: _Lines, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        lines.flush()


@contextlib.contextmanager
def _recording_file(path: str | Path) -> Iterator[IO[str]]:
    """The file ``record`` writes, closed at the end; an error writing what
    was still buffered names the file, as the other errors of the file do."""
    file = open_recording(path, "w")
    try:
        yield file
    finally:
        try:
            file.close()
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)
            raise


def _drain(channel: Any) -> list[Any]:
    items = []
    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
        while True:
            items.append(channel.receive_nowait())
    return items


class _Lines:
    """Writes the records: texts a batch at a time, with one time stamp per
    batch and each sender's part of the line encoded once (the same JSON as
    ``encode_record``); :meth:`flush` hands them to the system (``record``
    calls it every second); after an error, writes nothing."""

    def __init__(
        self,
        file: IO[str],
        path: str,
        stats: RecordingStats,
        keep: Sequence[Callable[[str], Any]],
        on_record: Callable[[RecordingStats], None] | None,
    ) -> None:
        self._file = file
        self._path = path
        self._stats = stats
        self._keep = keep
        self._on_record = on_record
        self._prefixes: dict[Peer, str] = {}
        self._unflushed = False
        self.failed = False

    def _now(self) -> float:
        return trio.current_time() - self._stats.started

    def header(self, text: str) -> None:
        """Write the header, at once: a recording with no message is still a file."""
        self._write(text, 0, 0)
        self.flush()

    def flush(self) -> None:
        """Hand what was written to the system (a ``kill -9`` then loses none of it)."""
        if self._unflushed and not self.failed:
            self._unflushed = False
            self._io(self._file.flush)

    def _io(self, operation: Callable[[], Any]) -> None:
        try:
            operation()
        except OSError as exc:
            self.failed = True
            if exc.filename is None:  # named, as open() names it, so callers can tell
                exc.filename = self._path
            raise

    def _write(self, text: str, messages: int, events: int) -> None:
        self._io(partial(self._file.write, text))
        self._unflushed = True
        stats = self._stats
        stats.messages += messages
        stats.events += events
        stats.changed.set()
        stats.changed = trio.Event()
        if self._on_record is not None:
            self._on_record(stats)

    def _seen(self, name: str) -> None:
        agents = self._stats.agents
        if len(agents) < AGENTS_KEPT:
            agents.add(name)

    def texts(self, matches: Sequence[Match], start: int = 0) -> int:
        """Write the texts of ``matches[start:]``; with filter regexps, for
        :data:`SERVE_SLICE` at most: returns where it stopped."""
        head = f'{{"t": {round(self._now(), 6)}, "event": "msg", '
        prefixes, keep, lines = self._prefixes, self._keep, []
        until = time.perf_counter() + SERVE_SLICE if keep else math.inf
        end = len(matches)
        for index in range(start, end):
            if keep and time.perf_counter() > until:  # (searches guarded, each up to 20 ms)
                end = index
                break
            match = matches[index]
            # (a text with \x03 arrives as several groups: put back whole)
            groups = match.groups
            text = groups[0] if len(groups) == 1 else "\x03".join(groups)
            if keep and not any(found(text) for found in keep):
                continue
            peer = match.peer
            prefix = prefixes.get(peer)
            if prefix is None:
                if len(prefixes) > 10_000:
                    prefixes.clear()  # (peers come and go)
                agent, host = _json_string(peer.name), _json_string(peer.host)
                prefix = prefixes[peer] = f'"agent": {agent}, "host": {host}, "text": '
                self._seen(peer.name)
            lines.append(f"{head}{prefix}{_json_string(text)}}}\n")
        if lines:
            self._write("".join(lines), len(lines), 0)
        return end

    def events(self, events: Iterable[Any]) -> None:
        now, records = self._now(), []
        for event in events:
            peer: Peer = event.peer
            if isinstance(event, PeerConnected | PeerDisconnected):
                kind = "connected" if isinstance(event, PeerConnected) else "disconnected"
                records.append(Record(now, kind, peer.name, peer.host))
            elif isinstance(event, SubscriptionAdded | SubscriptionChanged | SubscriptionRemoved):
                kind = "unsubscribed" if isinstance(event, SubscriptionRemoved) else "subscribed"
                sub_id, regexp = event.subscription_id, event.regexp
                records.append(Record(now, kind, peer.name, peer.host, id=sub_id, regexp=regexp))
            self._seen(peer.name)
        if records:
            self._write("".join(map(encode_record, records)), 0, len(records))


async def _record_texts(sub: Subscription, lines: _Lines) -> None:
    while True:
        try:
            batch = await sub.receive_batch()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return
        done = lines.texts(batch)
        while done < len(batch):  # (filter regexps took their slice: let the loop run)
            await trio.lowlevel.checkpoint()
            done = lines.texts(batch, done)


async def _record_events(events: Any, lines: _Lines) -> None:
    async for event in events:
        lines.events([event])

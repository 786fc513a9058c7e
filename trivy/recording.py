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
import gzip
import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any, cast

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
from ._open import open_ivy_bus
from ._recording_format import (
    Record,
    RecordingError,
    decode_records,
    encode_header,
    encode_record,
)
from ._recording_format import json_string as _json_string

__all__ = [
    "Record",
    "RecordingError",
    "RecordingStats",
    "ReplayStats",
    "load_recording",
    "open_recording",
    "record",
    "replay",
]

#: What the recorder subscribes to by default: every text.
EVERYTHING = "^(.*)$"


def open_recording(path: str | Path, mode: str) -> IO[str]:
    """A recording file opened for text (``"w"`` or ``"r"``); gzip when it ends with ``.gz``."""
    if str(path).endswith(".gz"):
        opened = gzip.open(path, mode + "t", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        return cast(IO[str], opened)
    return open(path, mode, encoding="utf-8", errors="surrogateescape")


def load_recording(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """The header and records of a recording file.

    Raises:
      RecordingError: not a recording, an unknown version, or a corrupt or
        truncated line (named by its number).
      OSError: the file cannot be read.
    """
    with open_recording(path, "r") as file:
        try:
            items = list(decode_records(file))
        except (EOFError, gzip.BadGzipFile) as exc:  # a cut .gz
            raise RecordingError(f"the compressed file is damaged or truncated: {exc}") from None
    header = items[0]
    assert isinstance(header, dict)
    return header, [item for item in items[1:] if isinstance(item, Record)]


@attrs.define
class RecordingStats:
    """What a recorder has written so far."""

    messages: int = 0
    events: int = 0
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
    regexps: Sequence[str] = (EVERYTHING,),
    on_record: Callable[[RecordingStats], None] | None = None,
    task_status: trio.TaskStatus[RecordingStats] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Join ``bus`` as ``name`` and record it to ``path`` until cancelled (or a DIE).

    Every text matching one of ``regexps`` (by default, every text) is
    recorded with its sender, and so are agents joining and leaving and
    their subscriptions. Nothing is dropped: if the file cannot keep up,
    the senders wait (trivy's backpressure). Leaving, however it happens,
    closes the file complete and valid. ``task_status.started`` gives the
    :class:`RecordingStats`, once the agent is on the bus.
    """
    with open_recording(path, "w") as file:
        async with open_ivy_bus(name, bus, **options) as ivy, ivy.events(overflow="wait") as events:
            started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            file.write(encode_header(str(ivy.bus_address), started))
            stats = RecordingStats(started=trio.current_time())

            def write(record: Record) -> None:
                file.write(encode_record(record))
                stats.agents.add(record.agent)
                if record.event == "msg":
                    stats.messages += 1
                else:
                    stats.events += 1
                stats.changed.set()
                stats.changed = trio.Event()
                if on_record is not None:
                    on_record(stats)

            def now() -> float:
                return trio.current_time() - stats.started

            subs = [ivy.subscribe(regexp) for regexp in regexps]
            try:
                async with trio.open_nursery() as nursery:
                    lines = _TextLines(file, stats)
                    for sub in subs:
                        nursery.start_soon(_record_texts, sub, lines, now, on_record, stats)
                    nursery.start_soon(_record_events, events, write, now)
                    task_status.started(stats)
                    await trio.sleep_forever()
            finally:
                # Leaving (Ctrl-C, a DIE): what was received is still written.
                for sub in subs:
                    _write_texts(_drain(sub), write, now)


def _drain(sub: Subscription) -> list[Match]:
    matches = []
    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
        while True:
            matches.append(sub.receive_nowait())
    return matches


def _write_texts(
    matches: Iterable[Match], write: Callable[[Record], None], now: Callable[[], float]
) -> None:
    for match in matches:
        text = match.groups[0] if match.groups else ""
        write(Record(now(), "msg", match.peer.name, match.peer.host, text=text))


class _TextLines:
    """``msg`` lines written fast: one time stamp per batch read, each
    sender's part of the line encoded once (the same JSON as encode_record)."""

    def __init__(self, file: IO[str], stats: RecordingStats) -> None:
        self._file = file
        self._stats = stats
        self._prefixes: dict[Peer, str] = {}

    def write(self, matches: Sequence[Match], t: float) -> None:
        head = f'{{"t": {round(t, 6)}, "event": "msg", '
        prefixes, lines = self._prefixes, []
        for match in matches:
            peer = match.peer
            prefix = prefixes.get(peer)
            if prefix is None:
                if len(prefixes) > 10_000:
                    prefixes.clear()  # (peers come and go)
                agent, host = _json_string(peer.name), _json_string(peer.host)
                prefix = prefixes[peer] = f'"agent": {agent}, "host": {host}, "text": '
                self._stats.agents.add(peer.name)
            text = match.groups[0] if match.groups else ""
            lines.append(f"{head}{prefix}{_json_string(text)}}}\n")
        self._file.write("".join(lines))
        stats = self._stats
        stats.messages += len(lines)
        stats.changed.set()
        stats.changed = trio.Event()


async def _record_texts(
    sub: Subscription,
    lines: _TextLines,
    now: Callable[[], float],
    on_record: Callable[[RecordingStats], None] | None,
    stats: RecordingStats,
) -> None:
    while True:
        try:
            batch = await sub.receive_batch()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return
        lines.write(batch, now())
        if on_record is not None:
            on_record(stats)


async def _record_events(
    events: Any, write: Callable[[Record], None], now: Callable[[], float]
) -> None:
    async for event in events:
        peer: Peer = event.peer
        if isinstance(event, PeerConnected | PeerDisconnected):
            kind = "connected" if isinstance(event, PeerConnected) else "disconnected"
            write(Record(now(), kind, peer.name, peer.host))
        elif isinstance(event, SubscriptionAdded | SubscriptionChanged | SubscriptionRemoved):
            kind = "unsubscribed" if isinstance(event, SubscriptionRemoved) else "subscribed"
            write(
                Record(
                    now(), kind, peer.name, peer.host, id=event.subscription_id, regexp=event.regexp
                )
            )


@attrs.define
class ReplayStats:
    """What a replay did: texts sent, and how late each was (seconds)."""

    sent: int = 0
    lateness: list[float] = attrs.field(factory=list)


def select(
    records: Iterable[Record],
    *,
    start: float = 0.0,
    end: float = math.inf,
    only: str | None = None,
    agents: Iterable[str] | None = None,
) -> list[Record]:
    """The ``msg`` records to replay: within ``[start, end]`` seconds of the
    recording, whose text ``only`` finds (a regexp), from ``agents`` (names)."""
    wanted = None if agents is None else set(agents)
    find = None if only is None else re.compile(only).search
    return [
        r
        for r in records
        if r.event == "msg"
        and start <= r.t <= end
        and (wanted is None or r.agent in wanted)
        and (find is None or find(r.text))
    ]


async def replay(
    records: Sequence[Record],
    bus: str | None = None,
    *,
    speed: float = 1.0,
    loop: bool = False,
    as_agent: str | None = None,
    wait_for: Iterable[str] = (),
    on_sent: Callable[[ReplayStats], None] | None = None,
    **options: Any,
) -> ReplayStats:
    """Play the ``msg`` records onto ``bus`` with their timing (``speed``: how
    much faster; ``math.inf``: as fast as possible).

    Each recorded sender is played by an agent of its name, on the bus before
    the first text (``as_agent``: one agent plays them all). Those agents
    first wait for the agents named in ``wait_for``. Times are kept against
    the start (no drift over long recordings). With ``loop``, it plays
    again until cancelled.
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive: {speed!r}")
    played = [r for r in records if r.event == "msg"]
    stats = ReplayStats()
    if not played:
        return stats
    names = sorted({as_agent or r.agent for r in played})
    async with AsyncExitStack() as stack:
        agents = {
            n: await stack.enter_async_context(open_ivy_bus(n, bus, **options)) for n in names
        }
        for peer_name in wait_for:
            for agent in agents.values():
                await agent.wait_for_peer(peer_name)
        origin = played[0].t
        while True:
            begin = trio.current_time()
            for r in played:
                due = begin + (r.t - origin) / speed
                if due > trio.current_time():
                    await trio.sleep_until(due)
                else:
                    await trio.lowlevel.checkpoint()
                stats.lateness.append(trio.current_time() - due)
                await agents[as_agent or r.agent].send(r.text)
                stats.sent += 1
                if on_sent is not None:
                    on_sent(stats)
            if not loop:
                return stats

"""What a replay plays: the texts of a recording, from a list or streamed from its file.

A recording can hold millions of records, and anyone may hand one over:
:class:`FilePlaylist` never holds it whole. It reads the file once to check
every line and learn what the replay needs before it starts (the senders,
to start their agents; how many texts; when the last one is due), then
reads it again for each pass, one record at a time.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, cast

from ._matching import safe_search
from ._recording_format import Record, RecordingError, bounded_lines, decode_records

__all__ = ["FilePlaylist", "ListPlaylist", "open_recording", "select", "selector"]


def open_recording(path: str | Path, mode: str) -> IO[str]:
    """A recording file opened for text (``"w"`` or ``"r"``); gzip when it ends with ``.gz``."""
    if str(path).endswith(".gz"):
        opened = gzip.open(path, mode + "t", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        return cast(IO[str], opened)
    return open(path, mode, encoding="utf-8", errors="surrogateescape")


def read_records(path: str | Path) -> Iterator[dict[str, object] | Record | None]:
    """The header, then each record, of a recording file, read as a stream.

    Raises:
      RecordingError: not a recording, or a bad line (named by its number),
        or a damaged compressed file.
      OSError: the file cannot be read.
    """
    with open_recording(path, "r") as file:
        try:
            yield from decode_records(bounded_lines(file))
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a cut or damaged .gz
            raise RecordingError(f"the compressed file is damaged or truncated: {exc}") from None


def selector(
    *,
    start: float = 0.0,
    end: float = math.inf,
    only: str | None = None,
    agents: Iterable[str] | None = None,
) -> Callable[[Record], bool]:
    """Which records a replay plays: ``msg`` records within ``[start, end]``
    seconds, whose text ``only`` finds (a regexp; a search past the guard's
    time bound finds nothing), from ``agents`` (names).

    Raises:
      re.error, ValueError: ``only`` cannot be matched safely."""
    wanted = None if agents is None else set(agents)
    found = None if only is None else safe_search(only)  # (on texts a file chose)
    return lambda r: (
        r.event == "msg"
        and start <= r.t <= end
        and (wanted is None or r.agent in wanted)
        and (found is None or found(r.text))
    )


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
    return list(filter(selector(start=start, end=end, only=only, agents=agents), records))


class ListPlaylist:
    """The ``msg`` records of a list, in memory."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._records = [r for r in records if r.event == "msg"]
        self.count = len(self._records)
        self.senders = frozenset(r.agent for r in self._records)
        self.last_t = max((r.t for r in self._records), default=0.0)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def scan(self) -> Generator[Record | None, None, None]:
        """The records played (as :meth:`FilePlaylist.scan`: none skipped here)."""
        yield from self._records


class FilePlaylist:
    """The records ``selected`` of a recording file, read anew for each pass.

    Checks the whole file when made, keeping only a count, the last time
    and the senders (up to ``most_senders`` + 1: enough to tell there are
    too many).

    Raises:
      RecordingError: not a recording, or a bad line.
      OSError: the file cannot be read.
    """

    def __init__(
        self, path: str | Path, selected: Callable[[Record], bool], most_senders: int
    ) -> None:
        self._path = path
        self._selected = selected
        self.count = 0
        self.last_t = 0.0
        senders: set[str] = set()
        for record in self._records():
            self.count += 1
            self.last_t = max(self.last_t, record.t)  # (times may go backwards)
            if len(senders) <= most_senders:
                senders.add(record.agent)
        self.senders = frozenset(senders)

    def _records(self) -> Iterator[Record]:
        return (item for item in self.scan() if item is not None)

    def scan(self) -> Generator[Record | None, None, None]:
        """Each line of the file read: its record if played, else ``None``.

        (A recording may hold millions of records not played: the ``None``
        lets a caller on an event loop yield while it skips them.)
        """
        for item in read_records(self._path):
            yield item if isinstance(item, Record) and self._selected(item) else None

    def __iter__(self) -> Iterator[Record]:
        return self._records()

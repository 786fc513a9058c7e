"""JSON of the pages' messages, encoded a slice of time at a time, in pieces.

A snapshot of a full model (1,000 agents, 500 kinds, the tail, texts of
astral characters: 12 bytes each in JSON) is about 50 MB of JSON: 40 to
110 ms of encoding in one call, and as long again to join it into one
string, while the bus's loop stands still. Each item of a message's lists
and mappings is encoded apart, the loop is let run every
:data:`ENCODE_SLICE`, and the JSON is kept in pieces of about
:data:`PIECE` characters, never joined: the pages are written a piece at a
time anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from time import perf_counter
from typing import Any

import trio

__all__ = ["DEPTH", "ENCODE_SLICE", "PIECE", "Encoded", "dumps_in_slices"]

#: Seconds of encoding between two yields to the loop.
ENCODE_SLICE = 0.002
#: Characters a piece is joined up to (one item may make a longer one).
PIECE = 64 * 1024
#: Levels of lists and dicts encoded an item at a time.
DEPTH = 3


class Encoded:
    """A message's JSON, in pieces; ``len()`` is its length in characters."""

    __slots__ = ("_size", "pieces")

    def __init__(self, pieces: Iterable[str]) -> None:
        self.pieces = tuple(pieces)
        self._size = sum(map(len, self.pieces))

    def __len__(self) -> int:
        return self._size

    def text(self) -> str:
        """The whole JSON, joined (for a short message, or a test)."""
        return "".join(self.pieces)


async def dumps_in_slices(message: Any) -> Encoded:
    """What ``json.dumps(message)`` makes, in pieces, letting the loop run
    every ENCODE_SLICE.

    Lists and dicts are encoded an item at a time down to :data:`DEPTH`
    levels (a snapshot's agents, an update's points by kind and each point
    of them); what is below is one item (an agent's regexps, a point's
    numbers, each bounded by the model).
    """
    out = _Pieces()
    await _encode(message, DEPTH, out)
    return out.done()


async def _encode(value: Any, depth: int, out: _Pieces) -> None:
    if depth and isinstance(value, list):
        out.add("[")
        for index, item in enumerate(value):
            if index:
                out.add(", ")
            await _encode(item, depth - 1, out)
        out.add("]")
    elif depth and isinstance(value, dict):
        out.add("{")
        for index, (name, item) in enumerate(value.items()):
            # (keys as json makes them: 1 -> "1")
            out.add((", " if index else "") + json.dumps({name: None})[1:-5])
            await _encode(item, depth - 1, out)
        out.add("}")
    else:
        out.add(json.dumps(value))
        await out.tick()


class _Pieces:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._current: list[str] = []
        self._length = 0
        self._started = perf_counter()

    def add(self, text: str) -> None:
        self._current.append(text)
        self._length += len(text)
        if self._length >= PIECE:
            self._flush()

    def _flush(self) -> None:
        self.pieces.append("".join(self._current))
        self._current, self._length = [], 0

    async def tick(self) -> None:
        if perf_counter() - self._started > ENCODE_SLICE:
            await trio.lowlevel.checkpoint()
            self._started = perf_counter()

    def done(self) -> Encoded:
        self._flush()
        return Encoded(self.pieces)

"""Bytes to lines, with an exact bound on a line's length (sans-IO).

The framing half of :class:`~trivy._connection.Connection`, as h11 keeps
its receive buffer apart: it holds the start of a line whose end has not
come yet, and hands out every complete line, decoded, once it has.
"""

from __future__ import annotations

import codecs

__all__ = ["LineBuffer"]

_decode_utf8 = codecs.utf_8_decode


def _first_long_line(data: bytes | bytearray, end: int, limit: int) -> int:
    """Where the first line of ``data[: end + 1]`` longer than ``limit`` starts, or -1."""
    start = 0
    while start <= end:
        newline = data.find(b"\n", start, end + 1)
        if newline - start > limit:
            return start
        start = newline + 1
    return -1


class LineBuffer:
    """Splits a byte stream into lines of at most ``max_line_length`` bytes.

    A line's length excludes its ``\\n``; a line of exactly the limit is
    taken, one byte more is not, whether it came in one piece or many.
    """

    def __init__(self, max_line_length: int) -> None:
        self.max_line_length = max_line_length
        # The start of the unfinished line, in one growing buffer: it costs
        # about its bytes however it came (a list of the pieces cost ~225
        # bytes of memory per byte dribbled one at a time), and grows
        # geometrically (no quadratic copying for a long line in pieces).
        self._partial = bytearray()
        #: Whether the lines the last :meth:`feed` returned are all ASCII
        #: (told at once by their text: a size can then count characters).
        self.ascii = True

    def feed(self, data: bytes) -> tuple[list[str], bool]:
        """Add bytes; returns the lines they complete, and whether one was too long.

        Text is UTF-8; invalid bytes are kept as surrogates. After a too-long
        line, the lines before it are returned and the buffer is emptied:
        the caller is expected to close the connection.
        """
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
            return [], self._overflowed()
        if end == len(data) - 1 and not self._partial and end <= self.max_line_length:
            # The usual read: whole lines, and no longer than the limit, so
            # none of them is: nothing kept, nothing to measure, no copy.
            text = _decode_utf8(data, "surrogateescape", True)[0]
            self.ascii = text.isascii()
            lines = text.split("\n")
            lines.pop()  # (what follows the last newline: nothing)
            return lines, False
        whole: bytes | bytearray = data
        if self._partial:
            end += len(self._partial)
            whole = self._partial
            whole += data
        self._partial = bytearray(memoryview(whole)[end + 1 :])
        limit = self.max_line_length
        long_line = _first_long_line(whole, end, limit) if end > limit else -1
        if long_line >= 0:
            self.clear()
            if long_line == 0:
                return [], True
            end = long_line - 1  # the lines before it
        # One decode for every complete line: "\n" never falls inside a
        # UTF-8 sequence, so decoding up to it is exact.
        text = _decode_utf8(memoryview(whole)[:end], "surrogateescape", True)[0]
        self.ascii = text.isascii()
        return text.split("\n"), long_line >= 0 or self._overflowed()

    def _overflowed(self) -> bool:
        if len(self._partial) > self.max_line_length:
            self.clear()
            return True
        return False

    @property
    def pending(self) -> int:
        """Bytes of the unfinished line held."""
        return len(self._partial)

    def holds(self, byte: bytes) -> bool:
        """Whether the unfinished line holds ``byte``."""
        return byte in self._partial

    def clear(self) -> None:
        """Forget the unfinished line."""
        self._partial = bytearray()

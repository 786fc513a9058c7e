"""The line framing: exact limits, and memory that counts bytes."""

from __future__ import annotations

import itertools
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from trivy._lines import LineBuffer


def test_a_line_dribbled_a_byte_at_a_time_costs_about_its_bytes() -> None:
    """A partial line sent one byte per write cost ~225 bytes of memory per byte."""
    buffer = LineBuffer(1024 * 1024)
    pieces = [bytes([65 + i % 26]) for i in range(200_000)]  # made before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for piece in pieces:
            buffer.feed(piece)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * len(pieces), held  # (a bytearray grows by an eighth at most)
    lines, too_long = buffer.feed(b"\n")
    assert lines == ["".join(chr(piece[0]) for piece in pieces)] and not too_long


@given(
    chunks=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"|")), max_size=20),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_lines_come_out_whole_however_the_bytes_are_cut(
    chunks: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(chunk + b"\n" for chunk in chunks)
    buffer = LineBuffer(100)
    lines: list[str] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        cut = min(max(cut, start), len(stream))
        got, too_long = buffer.feed(stream[start:cut]) if cut > start else ([], False)
        assert not too_long
        lines += got
        start = cut
    expected = [chunk.decode("utf-8", "surrogateescape") for chunk in chunks]
    assert lines == expected


@given(
    lengths=st.lists(st.integers(0, 12), max_size=8),
    cuts=st.lists(st.integers(0, 120), max_size=6),
)
def test_the_first_line_over_the_limit_ends_the_stream_however_the_bytes_are_cut(
    lengths: list[int], cuts: list[int]
) -> None:
    # Lines around the limit (8): reads of whole lines take a shorter path
    # than reads that end mid-line; both must draw the line at the same place.
    limit = 8
    stream = b"".join(b"x" * length + b"\n" for length in lengths)
    buffer = LineBuffer(limit)
    lines: list[str] = []
    refused = False
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        cut = min(max(cut, start), len(stream))
        if cut > start:
            got, too_long = buffer.feed(stream[start:cut])
            lines += got
            if too_long:
                refused = True
                break
        start = cut
    taken = list(itertools.takewhile(lambda length: length <= limit, lengths))
    assert lines == ["x" * length for length in taken]
    assert refused == (len(taken) < len(lengths))

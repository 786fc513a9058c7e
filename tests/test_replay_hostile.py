"""``trivy replay`` reads a recording as untrusted input: one line, exit 2.

Each hostile file makes the command say what is wrong in one line on
stderr and exit with 2 (a bad input), with no traceback and bounded memory.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from .conftest import free_udp_port

HEADER = json.dumps({"trivy_recording": 1, "bus": "127:2010", "started": "now"}) + "\n"


def _msg(t: object = 0.0, text: object = "x", agent: str = "A") -> str:
    return json.dumps({"t": t, "event": "msg", "agent": agent, "host": "h", "text": text}) + "\n"


def _gzip_bomb(path: Path) -> None:
    """200 MB of one endless line, in a 200 KB file."""
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write(HEADER)
        chunk = "0" * (1024 * 1024)
        for _ in range(200):
            file.write(chunk)


def _plain(*lines: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(HEADER + "".join(lines), encoding="utf-8")

    return write


HOSTILE = {
    "gzip-bomb.jsonl.gz": (_gzip_bomb, "over 6295552 characters"),
    "deep.jsonl": (_plain("[" * 100_000 + "]" * 100_000 + "\n"), "not a record"),
    "big-id.jsonl": (
        _plain(
            '{"t": 0, "event": "subscribed", "agent": "A", "host": "h", "id": '
            + "9" * 5000
            + ', "regexp": "x"}\n'
        ),
        "not a record",
    ),
    "far-time.jsonl": (
        _plain('{"t": 1e400, "event": "msg", "agent": "A", "host": "h", "text": "x"}\n'),
        "'t' must be 0 to 1e+09 seconds",
    ),
    "nan-time.jsonl": (
        _plain('{"t": NaN, "event": "msg", "agent": "A", "host": "h", "text": "x"}\n'),
        "'t' must be 0 to 1e+09 seconds",
    ),
    "newline.jsonl": (_plain(_msg(text="two\nlines")), "with a newline"),
    "huge-text.jsonl": (_plain(_msg(text="x" * (1024 * 1024 + 10))), "longer than a MSG"),
    "senders.jsonl": (
        _plain(*(_msg(agent=f"A{i}") for i in range(3000))),
        "more than 64 senders",
    ),
}


#: Runs a command and writes the most memory it held (KiB) to a file: a
#: process forked from the tests' own starts with their memory counted as
#: its peak, so the command is started from this small one.
MEASURED = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_recording_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    write, message = HOSTILE[name]
    path = tmp_path / name
    write(path)
    peak = tmp_path / "peak"
    command = [sys.executable, "-m", "trivy", "replay", str(path), "-b", f"127:{free_udp_port()}"]
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-c", MEASURED, str(peak), *command],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1 and message in stderr, stderr
    # what the command held at most: far from the 4.1 GB the bomb cost
    assert int(peak.read_text()) < 400 * 1024


def test_a_long_recording_is_streamed_not_held(tmp_path: Path) -> None:
    """40 million records were loaded whole before playing (their memory)."""
    import tracemalloc

    from trivy._playlist import FilePlaylist, selector

    path = tmp_path / "long.jsonl"
    count = 200_000
    with path.open("w", encoding="utf-8") as file:
        file.write(HEADER)
        file.writelines(_msg(t=i / 1000, text=f"TRACK {i} " + "x" * 60) for i in range(count))
    tracemalloc.start()
    try:
        playlist = FilePlaylist(path, selector(only="^TRACK"), most_senders=64)
        played = sum(1 for _ in playlist)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert playlist.count == played == count
    assert playlist.senders == {"A"} and playlist.last_t == (count - 1) / 1000
    assert peak < path.stat().st_size / 4, (peak, path.stat().st_size)  # ~20 MB of file


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            '{"t": "x", "event": "msg", "agent": "A", "host": "h", "text": "t"}',
            "'t' must be a number of seconds, not str 'x'",
        ),
        (
            '{"t": 1, "event": "msg", "agent": 3, "host": "h", "text": "t"}',
            "'agent' must be a string, not int 3",
        ),
        ('{"t": 1, "event": "msg", "agent": "A", "host": "h"}', "a msg record without 'text'"),
        (
            '{"t": 1, "event": "subscribed", "agent": "A", "host": "h", "id": 1.5, "regexp": "x"}',
            "'id' must be an integer, not float 1.5",
        ),
    ],
)
def test_a_bad_field_is_named_in_one_sentence(line: str, said: str) -> None:
    """It read 'a msg record without a valid could not convert string to float'."""
    from trivy._recording_format import RecordingError, decode_records

    with pytest.raises(RecordingError) as raised:
        list(decode_records([HEADER, line + "\n"]))
    assert str(raised.value) == f"line 2: {said}"


async def test_records_skipped_let_the_loop_run(tmp_path: Path) -> None:
    """300,000 records not played (``subscribed``) were read in one go: the
    loop was held 1.4 s, and nothing else ran between the two texts."""
    from trivy._playlist import FilePlaylist, selector
    from trivy.recording import ReplayStats, replay

    path = tmp_path / "skipped.jsonl"
    skipped = json.dumps(
        {"t": 0.005, "event": "subscribed", "agent": "A", "host": "h", "id": 1, "regexp": "x"}
    )
    path.write_text(
        HEADER + _msg(0.0, "first") + (skipped + "\n") * 300_000 + _msg(0.01, "second"),
        encoding="utf-8",
    )
    playlist = FilePlaylist(path, selector(), most_senders=64)
    turns = 0
    at_sent: list[int] = []

    async def bystander() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    def on_sent(stats: ReplayStats) -> None:
        at_sent.append(turns)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander)
            stats = await replay(playlist, f"127.255.255.255:{free_udp_port()}", on_sent=on_sent)
            nursery.cancel_scope.cancel()
    assert stats.sent == 2
    # one turn every 2 ms of reading (~700 here); there was one, at the end
    assert at_sent[1] - at_sent[0] >= 50, at_sent

"""What any peer may send is recorded whole, and a recording of it replays.

A red team found one peer could make a whole recording unreplayable (an
empty agent name, a text a few bytes under a MSG line's limit), texts with
``\\x03`` recorded cut, and crafted lines that crashed a replay. Each case
here failed before.
"""

from __future__ import annotations

import functools
import gc
import json
import socket
import sys
from pathlib import Path

import pytest
import trio

import trivy
from trivy import _playlist
from trivy._recording_format import MAX_TEXT, Record, RecordingError, decode_records
from trivy.recording import ReplayStats, load_recording, record, replay
from trivy.testing import free_bus_address, wait_for_subscription

from .conftest import free_udp_port
from .heartbeat import LongestStep

TIMEOUT = 30
HEADER = json.dumps({"trivy_recording": 1, "bus": "127:2010", "started": "now"}) + "\n"
#: Texts that arrive as several groups (a MSG's groups end with \x03).
SPLIT = ["a\x03b", "trail\x03", "\x03lead", "\x03"]


def _line(**fields: object) -> str:
    return json.dumps({"t": 0.0, "agent": "A", "host": "h", **fields}) + "\n"


async def test_texts_with_the_group_end_and_a_nameless_peer_are_recorded_whole(
    tmp_path: Path,
) -> None:
    path, bus = tmp_path / "peers.jsonl", free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("SOURCE", bus) as source, trio.open_nursery() as nursery:
            stats = await nursery.start(functools.partial(record, path, bus))
            recorder = await wait_for_subscription(source, "TRIVYRECORD", "^(.*)$")
            for text in SPLIT:
                await source.send(text)
            # a peer with an empty name (the protocol lets it) says one text
            nameless = socket.create_connection(("127.0.0.1", recorder.port))
            nameless.sendall(b"6 1\x02\n5 0\x02\n")
            sub_id = None
            data = b""
            while sub_id is None:
                chunk = await trio.to_thread.run_sync(nameless.recv, 65536)
                assert chunk
                data += chunk
                for line in data.split(b"\n"):
                    if line.startswith(b"1 ") and line.endswith(b"\x02^(.*)$"):
                        sub_id = int(line[2:].split(b"\x02")[0])
            nameless.sendall(b"2 %d\x02from nobody\x03\n" % sub_id)
            await stats.wait_messages(len(SPLIT) + 1)
            nameless.close()
            source.send_die(recorder)
    _, records = load_recording(path)  # (it refused the empty name)
    msgs = [(r.agent, r.text) for r in records if r.event == "msg"]
    assert msgs == [("SOURCE", text) for text in SPLIT] + [("", "from nobody")]


async def test_the_replay_command_plays_what_it_can_and_says_what_it_skipped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mixed.jsonl"
    too_long_to_send = "x" * (MAX_TEXT - 10)  # (over what our own MSG line carries)
    path.write_text(
        HEADER
        + _line(event="msg", text="played")
        + _line(event="msg", agent="", text="from nobody")
        + _line(event="msg", text=too_long_to_send),
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "trivy", "replay", str(path), "-b", f"127:{free_udp_port()}"]
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(command, capture_stderr=True, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "the texts of '' are skipped" in stderr
    assert "replayed 1 messages" in stderr and "1 skipped" in stderr, stderr


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (_line(event="msg", text="\ud800"), "a lone surrogate"),
        (_line(event=[]), "unknown event []"),
        (_line(event="x" * 1000), "unknown event 'xxxxxxx"),
    ],
)
def test_crafted_lines_get_a_short_error_not_a_crash(line: str, said: str) -> None:
    with pytest.raises(RecordingError) as raised:
        list(decode_records([HEADER, line]))
    assert said in str(raised.value) and len(str(raised.value)) < 120


def test_blank_lines_are_handed_on_so_a_replay_can_yield(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text(HEADER + "\n" * 100_000 + _line(event="msg", text="x"), encoding="utf-8")
    scanned = list(_playlist.FilePlaylist(path, _playlist.selector(), 64).scan())
    assert scanned.count(None) == 100_001  # (the header, and each blank line)
    assert len(scanned) == 100_002 and isinstance(scanned[-1], Record)


async def test_a_replaying_agent_told_to_die_ends_the_replay_with_its_stats() -> None:
    bus = free_bus_address()
    records = [Record(float(i), "msg", "PLAYER", "h", text=f"t{i}") for i in range(100)]
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("KILLER", bus) as killer, trio.open_nursery() as nursery:
            result: list[ReplayStats] = []

            async def play() -> None:
                result.append(await replay(records, bus))

            nursery.start_soon(play)
            player = await killer.wait_for_peer("PLAYER")
            killer.send_die(player)
    assert isinstance(result[0], ReplayStats) and result[0].sent < 100


def test_times_going_backwards_keep_a_pass_as_long_as_its_latest_text() -> None:
    records = [Record(2.0, "msg", "A", "h", text="a"), Record(0.0, "msg", "A", "h", text="b")]
    assert _playlist.ListPlaylist(records).last_t == 2.0


def test_the_lateness_kept_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from trivy import _replaying

    monkeypatch.setattr(_replaying, "LATENESS_KEPT", 10)
    stats = ReplayStats()
    for number in range(1000):
        stats.late(number / 1000, number)
    assert len(stats.lateness) == 10 and max(stats.lateness) > 0.01  # (a sample of all)


async def test_filter_regexps_are_guarded_and_the_recorder_lets_the_loop_run(
    tmp_path: Path,
) -> None:
    """``(\\d+),(\\d+)`` on 60,000 digits took 18.7 s in one step of ``re``."""
    path, bus = tmp_path / "filtered.jsonl", free_bus_address()
    longest = LongestStep()
    gc.disable()  # (a collection is no step's doing)
    try:
        with trio.fail_after(TIMEOUT):
            async with trivy.open_ivy_bus("SOURCE", bus) as source, trio.open_nursery() as nursery:
                regexps = [r"(\d+),(\d+)"]
                stats = await nursery.start(functools.partial(record, path, bus, regexps=regexps))
                recorder = await wait_for_subscription(source, "TRIVYRECORD", "^(.*)$")
                trio.lowlevel.add_instrument(longest)
                for _ in range(5):
                    await source.send("1" * 60_000)
                await source.send("12,34")
                await stats.wait_messages(1)
                trio.lowlevel.remove_instrument(longest)
                source.send_die(recorder)
    finally:
        gc.enable()
    _, records = load_recording(path)
    assert [r.text for r in records if r.event == "msg"] == ["12,34"]
    assert longest.longest < 0.1, f"a step of {longest.longest * 1000:.0f} ms"

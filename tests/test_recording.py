"""Record a bus and replay it (trivy.recording, trivy record / trivy replay)."""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import trivy
from trivy._recording_format import Record, RecordingError, decode_records, encode_record
from trivy.recording import load_recording, record, replay, select
from trivy.testing import free_bus_address, ivy_python_agent, wait_for_subscription

TIMEOUT = 30
#: How far a replayed text may be from its recorded time (seconds, at 1x).
TOLERANCE = 0.08


# ------------------------------------------------------------------ format


def _write(path: Path, *lines: str) -> None:
    path.write_text("".join(lines))


HEADER = '{"trivy_recording": 1, "bus": "127:2010", "started": "2026-11-27T00:00:00+00:00"}\n'


A_MSG = '{"t": 0, "event": "msg", "agent": "A", "host": "h"'
BAD_FILES = [
    ([], "line 1: an empty file"),
    (['{"hello": 1}\n'], "line 1: not a trivy recording"),
    (["PK\x03\x04 not text\n"], "line 1: not a trivy recording"),
    (['{"trivy_recording": 7}\n'], "line 1: recording format version 7"),
    ([HEADER, A_MSG + ', "tex'], "line 2: not JSON (truncated?)"),
    ([HEADER, "\n", A_MSG.replace("msg", "boom") + "}\n"], "line 3: unknown event 'boom'"),
    ([HEADER, A_MSG + "}\n"], "line 2: a msg record without"),
    ([HEADER, A_MSG.replace('"t": 0', '"t": -1') + ', "text": ""}\n'], "line 2: 't' must be 0 to"),
    ([HEADER, "[1, 2]\n"], "line 2: not a record"),
]


@pytest.mark.parametrize(("lines", "message"), BAD_FILES)
def test_bad_files_get_an_error_naming_the_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    _write(path, *lines)
    with pytest.raises(RecordingError, match=re.escape(message)):
        load_recording(path)


def test_records_round_trip_and_gzip(tmp_path: Path) -> None:
    records = [
        Record(0.0, "connected", "A", "127.0.0.1"),
        Record(0.5, "subscribed", "A", "127.0.0.1", id=3, regexp="^x (.*)"),
        Record(1.25, "msg", "A", "127.0.0.1", text="héllo \udce9"),  # a byte that was not UTF-8
        Record(2.0, "disconnected", "A", "127.0.0.1"),
    ]
    lines = [HEADER, *(encode_record(r) for r in records)]
    for line in lines[1:]:
        json.loads(line)  # each line is plain JSON (jq reads it)
    assert list(decode_records(lines))[1:] == records
    path = tmp_path / "rec.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.writelines(lines)
    assert load_recording(path)[1] == records
    path.write_bytes(path.read_bytes()[:-10])  # cut short
    with pytest.raises(RecordingError, match="damaged or truncated"):
        load_recording(path)


def test_select_window_filters_and_agents() -> None:
    script = [(0.0, "A", "x 1"), (1.0, "B", "y 2"), (2.0, "A", "x 3"), (3.0, "B", "x 4")]
    records = [Record(t, "msg", agent, "h", text=text) for t, agent, text in script]
    records.insert(1, Record(0.5, "connected", "C", "h"))
    assert [r.text for r in select(records)] == ["x 1", "y 2", "x 3", "x 4"]
    assert [r.text for r in select(records, start=1, end=2)] == ["y 2", "x 3"]
    assert [r.text for r in select(records, only="^x")] == ["x 1", "x 3", "x 4"]
    assert [r.text for r in select(records, agents=["B"])] == ["y 2", "x 4"]


# --------------------------------------------------------- record, replay


SCRIPT = [  # (seconds after the previous text, sender, text)
    (0.0, "ALPHA", "pos 1 2"),
    (0.15, "BETA", "status ok"),
    (0.1, "PYPEER", "alert high"),
    (0.25, "ALPHA", "pos 3 4"),
    (0.05, "BETA", "status degraded"),
    (0.2, "PYPEER", "alert low"),
]


async def _record_scenario(path: Path) -> list[Record]:
    bus = free_bus_address()
    async with (
        trivy.open_ivy_bus("ALPHA", bus) as alpha,
        trivy.open_ivy_bus("BETA", bus) as beta,
        ivy_python_agent(bus, "PYPEER") as pypeer,
        trio.open_nursery() as nursery,
    ):
        stats = await nursery.start(functools.partial(record, path, bus))
        for agent in (alpha, beta):
            await wait_for_subscription(agent, "TRIVYRECORD", "^(.*)$")
        await pypeer.expect("regexp", sender="TRIVYRECORD", action="add")
        senders = {"ALPHA": alpha, "BETA": beta}
        for delay, sender, text in SCRIPT:
            await trio.sleep(delay)  # the scenario's own timing
            if sender == "PYPEER":
                await pypeer.request("send", "sent", text=text)
            else:
                await senders[sender].send(text)
        await stats.wait_messages(len(SCRIPT))
        nursery.cancel_scope.cancel()
    header, records = load_recording(path)
    assert header["trivy_recording"] == 1
    return records


async def _receive(
    bus: str, count: int, task_status: trio.TaskStatus[trivy.IvyBus] = trio.TASK_STATUS_IGNORED
) -> list[tuple[float, str, str]]:
    got = []
    async with trivy.open_ivy_bus("RECEIVER", bus) as receiver:
        sub = receiver.subscribe("^(.*)$")
        task_status.started(receiver)
        async for match in sub:
            got.append((trio.current_time(), match.peer.name, match.groups[0]))
            if len(got) == count:
                return got
    return got


async def _collect(
    result: list[list[tuple[float, str, str]]],
    bus: str,
    count: int,
    task_status: trio.TaskStatus[trivy.IvyBus] = trio.TASK_STATUS_IGNORED,
) -> None:
    result.append(await _receive(bus, count, task_status=task_status))


async def test_record_then_replay_gives_the_same_bus(tmp_path: Path) -> None:
    path = tmp_path / "scenario.jsonl"
    with trio.fail_after(TIMEOUT):
        records = await _record_scenario(path)
        msgs = [r for r in records if r.event == "msg"]
        assert [(r.agent, r.text) for r in msgs] == [(s, x) for _, s, x in SCRIPT]
        assert {"ALPHA", "BETA", "PYPEER"} <= {r.agent for r in records if r.event == "connected"}
        assert any(r.event == "subscribed" and r.agent == "ALPHA" for r in records) is False

        for speed in (1.0, 10.0):
            bus = free_bus_address()
            result: list[list[tuple[float, str, str]]] = []
            async with trio.open_nursery() as nursery:
                await nursery.start(_collect, result, bus, len(msgs))
                stats = await replay(records, bus, speed=speed, wait_for=["RECEIVER"])
            got = result[0]
            assert [(name, text) for _, name, text in got] == [(r.agent, r.text) for r in msgs]
            # the gaps between texts are the recorded ones, divided by the speed
            for i in range(1, len(msgs)):
                recorded = (msgs[i].t - msgs[i - 1].t) / speed
                replayed = got[i][0] - got[i - 1][0]
                assert abs(replayed - recorded) < TOLERANCE, (i, recorded, replayed, speed)
            assert stats.sent == len(msgs) and max(stats.lateness) < TOLERANCE


async def test_replay_filters_one_agent_and_loop(tmp_path: Path) -> None:
    path = tmp_path / "scenario.jsonl"
    with trio.fail_after(TIMEOUT):
        records = await _record_scenario(path)
        wanted = select(records, only="^(pos|alert)", agents=["ALPHA", "PYPEER"])
        assert [r.text for r in wanted] == ["pos 1 2", "alert high", "pos 3 4", "alert low"]
        bus = free_bus_address()
        async with trio.open_nursery() as nursery:
            result: list[list[tuple[float, str, str]]] = []

            async def receive(task_status: trio.TaskStatus[None]) -> None:
                result.append(await _receive(bus, 2 * len(wanted), task_status=task_status))
                nursery.cancel_scope.cancel()

            await nursery.start(receive)
            await replay(
                wanted, bus, speed=math.inf, loop=True, as_agent="PLAYER", wait_for=["RECEIVER"]
            )
        got = result[0]
        assert [text for _, _, text in got] == [r.text for r in wanted] * 2
        assert {name for _, name, _ in got} == {"PLAYER"}


@asynccontextmanager
async def _recorder_process(path: Path, bus: str) -> AsyncIterator[trio.Process]:
    """``python -m trivy record PATH -b BUS``, killed at the end if still running."""
    recorder = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trivy", "record", str(path), "-b", bus],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield recorder
    finally:
        recorder.kill()


async def test_the_commands_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "cli.jsonl.gz"
    bus = free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("TALKER", bus) as talker,
            _recorder_process(path, bus) as recorder,
        ):
            await wait_for_subscription(talker, "TRIVYRECORD", "^(.*)$")
            for i in range(3):
                assert await talker.send(f"line {i}") == 1
                assert await talker.ping(talker.peer("TRIVYRECORD")) >= 0  # it has read it
            talker.send_die(talker.peer("TRIVYRECORD"))  # ends the recording cleanly
            assert await recorder.wait() == 0
        _, records = load_recording(path)
        assert [r.text for r in records if r.event == "msg"] == [f"line {i}" for i in range(3)]

        bus = free_bus_address()
        result: list[list[tuple[float, str, str]]] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(_collect, result, bus, 3)
            options = ["-b", bus, "--speed", "0", "--wait-for", "RECEIVER"]
            done = await trio.run_process(
                [sys.executable, "-m", "trivy", "replay", str(path), *options],
                capture_stderr=True,
            )
        assert b"replayed 3 messages" in done.stderr
        assert [(name, text) for _, name, text in result[0]] == [
            ("TALKER", f"line {i}") for i in range(3)
        ]
        bad = await trio.run_process(
            [sys.executable, "-m", "trivy", "replay", str(tmp_path / "none.jsonl")],
            capture_stderr=True,
            check=False,
        )
        assert bad.returncode == 2 and b"none.jsonl" in bad.stderr


async def test_nothing_received_is_lost_when_the_recording_ends(tmp_path: Path) -> None:
    """Texts received but not yet written when the recording is stopped (here
    by a DIE right behind them) are written all the same."""
    path = tmp_path / "burst.jsonl"
    bus = free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("BURST", bus) as burst, trio.open_nursery() as nursery:
            await nursery.start(functools.partial(record, path, bus))
            peer = await wait_for_subscription(burst, "TRIVYRECORD", "^(.*)$")
            for i in range(5000):
                await burst.send(f"b {i}")
            # the DIE comes after them: the recorder stops with matches still
            # in its buffer, and writes them before closing the file
            burst.send_die(peer)
    _, records = load_recording(path)
    assert [r.text for r in records if r.event == "msg"] == [f"b {i}" for i in range(5000)]


async def test_ctrl_c_ends_a_compressed_recording_complete(tmp_path: Path) -> None:
    path = tmp_path / "sigint.jsonl.gz"
    bus = free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("TALKER", bus) as talker,
            _recorder_process(path, bus) as recorder,
        ):
            peer = await wait_for_subscription(talker, "TRIVYRECORD", "^(.*)$")
            assert await talker.send("before ctrl-c") == 1
            await talker.ping(peer)
            recorder.send_signal(signal.SIGINT)
            assert await recorder.wait() == 130
    _, records = load_recording(path)  # a valid gzip file, with its trailer
    assert [r.text for r in records if r.event == "msg"] == ["before ctrl-c"]


async def test_regexps_select_texts_recorded_whole_and_once(tmp_path: Path) -> None:
    path = tmp_path / "some.jsonl"
    bus = free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("SOURCE", bus) as source, trio.open_nursery() as nursery:
            regexps = ["^(a.*)$", "^a", "^b"]  # overlapping, one without a group
            stats = await nursery.start(functools.partial(record, path, bus, regexps=regexps))
            peer = await wait_for_subscription(source, "TRIVYRECORD", "^(.*)$")
            for text in ("abc", "xyz", "bcd"):
                await source.send(text)
            source.send_die(peer)
    _, records = load_recording(path)
    assert [r.text for r in records if r.event == "msg"] == ["abc", "bcd"]
    assert stats.messages == 2


async def test_replay_keeps_leading_silence_and_counts_texts_no_one_heard() -> None:
    records = [Record(t, "msg", "LONELY", "h", text=text) for t, text in [(0.3, "a"), (0.4, "b")]]
    with trio.fail_after(TIMEOUT):
        start = trio.current_time()
        stats = await replay(records, free_bus_address())  # nobody listens
        assert trio.current_time() - start >= 0.4
    assert (stats.sent, stats.unheard, stats.passes) == (2, 2, 1)
    assert max(stats.lateness) < TOLERANCE


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["-b", "127:notaport"], 2, "127:notaport"),
        (["--only", "("], 2, "--only '('"),
        (["--agent", "NOBODY"], 1, "nothing to replay"),
        (["--speed", "-1"], 2, "--speed"),
    ],
)
async def test_replay_command_errors(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    path = tmp_path / "one.jsonl"
    _write(path, HEADER, encode_record(Record(0.0, "msg", "A", "h", text="x")))
    done = await trio.run_process(
        [sys.executable, "-m", "trivy", "replay", str(path), *args],
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == code
    assert says in done.stderr.decode() and b"Traceback" not in done.stderr


FULL = Path("/dev/full")  # writes to it fail with "no space left on device"


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
async def test_a_full_disk_ends_the_recording_with_an_error(tmp_path: Path) -> None:
    full = FULL
    bus = free_bus_address()
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("TALKER", bus):
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trivy", "record", str(full), "-b", bus],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:  # (the header is flushed at once: it fails there, once on the bus)
                assert await process.wait() == 1
                assert process.stderr is not None
                stderr = await process.stderr.receive_some(65536)
            finally:
                process.kill()
    assert b"cannot record to '/dev/full': No space left on device\n" in stderr
    assert b"Traceback" not in stderr

"""The command line as a new user meets it: arguments in any order, one line
per error and never a traceback, a recorder that keeps what it received, and
one-shot senders that wait for the agents answering their announce.

Every command runs as a real process on its own loopback bus.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import trivy
from trivy import protocol
from trivy._record_cli import _show_progress
from trivy.recording import RecordingStats, load_recording
from trivy.testing import RawPeer, wait_for_subscription

from .conftest import free_udp_port
from .test_cli import TEST_TIMEOUT, run, running

#: A process that holds a UDP port (any address, no SO_REUSEADDR), and a TCP
#: port, and says which, until its stdin closes.
HOLDER = """
import socket, sys
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 0))
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
print(udp.getsockname()[1], tcp.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def held_ports() -> Iterator[tuple[int, int]]:
    """(UDP port, TCP port) another process holds."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    udp, tcp = map(int, holder.stdout.readline().split())
    yield udp, tcp
    holder.stdin.close()
    holder.wait()


# ------------------------------------------------------------ item 1: argument order


async def test_options_may_follow_positionals_as_users_type_them(tmp_path: Path) -> None:
    """``record FILE -b BUS REGEXP…`` and ``probe REGEXP -b BUS REGEXP`` said
    "unrecognized arguments"."""
    port = free_udp_port()
    bus = f"127:{port}"
    path = tmp_path / "tracks.jsonl"
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy.open_ivy_bus("TALKER", bus) as talker:
            async with running("probe", "^(a)", "-b", bus, "^(b)") as probe:
                await wait_for_subscription(talker, "TRIVYPROBE", "^(a)")
                await wait_for_subscription(talker, "TRIVYPROBE", "^(b)")
                await probe.close_stdin()
                assert await probe.finish() == 0
            async with running("record", str(path), "-b", bus, "^TRACK", "^ALERT") as recorder:
                peer = await wait_for_subscription(talker, "TRIVYRECORD", "^(.*)$")
                for text in ("TRACK 1", "OTHER 2", "ALERT 3"):
                    await talker.send(text)
                await talker.ping(peer)  # (its PONG: it has read the texts before)
                recorder.process.send_signal(signal.SIGINT)
                assert await recorder.finish() == 130
    _, records = load_recording(path)
    assert [r.text for r in records if r.event == "msg"] == ["TRACK 1", "ALERT 3"]


async def test_record_without_a_file_names_only_what_is_required() -> None:
    done = await run("record")
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "python -m trivy record: error: the following arguments are required: FILE (see --help)"
    ]


# ----------------------------------------------------- item 2: one line, never a traceback


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["probe", "-b", "127:{udp}"], 1, "cannot join the bus"),
        (["send", "-b", "127:{udp}", "x"], 1, "cannot join the bus"),
        (["who", "-b", "127:{udp}"], 1, "cannot join the bus"),
        (["ping", "-b", "127:{udp}", "A"], 1, "cannot join the bus"),
        (["die", "-b", "127:{udp}", "A"], 1, "cannot join the bus"),
        (["daemon", "-b", "127:{udp}", "-p", "0"], 1, "cannot join the bus"),
        (["record", "{tmp}/r.jsonl", "-b", "127:{udp}"], 1, "cannot join the bus"),
        (["daemon", "-b", "127:{free}", "-p", "{tcp}"], 1, "cannot listen on port {tcp}"),
        (["daemon", "-b", "127:{free}", "-p", "-5"], 2, "within 0..65535, not -5"),
        (["daemon", "-b", "127:{free}", "-p", "99999"], 2, "within 0..65535, not 99999"),
        (["die", "-b", "127:{free}", ""], 2, "an agent name is one non-empty line"),
        (["ping", "-b", "127:{free}", ""], 2, "an agent name is one non-empty line"),
        (["send", "-b", "127:{free}", "--settle", "-1", "x"], 2, "must be >= 0"),
        (["who", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["bogus"], 2, "invalid choice: 'bogus'"),
    ],
)
async def test_each_bad_input_is_one_line_and_its_exit_code(
    held_ports: tuple[int, int], tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    udp, tcp = held_ports
    fields = {"udp": udp, "tcp": tcp, "free": free_udp_port(), "tmp": tmp_path}
    with trio.fail_after(TEST_TIMEOUT):
        done = await run(*(arg.format(**fields) for arg in args))
    stderr = done.stderr.decode()
    assert done.returncode == code, stderr
    assert len(stderr.splitlines()) == 1 and said.format(**fields) in stderr, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "r.jsonl").exists()  # a bus it cannot join leaves no file


# --------------------------------------------------- item 4: flushed on a timer, SIGTERM


async def test_a_quiet_recording_is_on_disk_within_a_second_and_sigterm_ends_it(
    tmp_path: Path,
) -> None:
    """It flushed only when a later write came a second after the last flush:
    a kill -9 on a quiet bus lost what was received; SIGTERM left no file."""
    bus = f"127:{free_udp_port()}"
    path = tmp_path / "quiet.jsonl"
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy.open_ivy_bus("TALKER", bus) as talker:
            async with running("record", str(path), "-b", bus) as recorder:
                await wait_for_subscription(talker, "TRIVYRECORD", "^(.*)$")
                await talker.send("the only text")
                with trio.fail_after(3):  # the flush timer runs every second
                    # (what another process wrote has no event: the file is looked at)
                    while b"the only text" not in path.read_bytes():  # noqa: ASYNC110
                        await trio.sleep(0.05)
                recorder.process.send_signal(signal.SIGTERM)
                assert await recorder.finish() == 130
            empty = tmp_path / "empty.jsonl"
            async with running("record", str(empty), "-b", bus) as recorder:
                await wait_for_subscription(talker, "TRIVYRECORD", "^(.*)$")
                recorder.process.send_signal(signal.SIGTERM)
                assert await recorder.finish() == 130
    header, records = load_recording(path)
    assert [r.text for r in records if r.event == "msg"] == ["the only text"]
    header, records = load_recording(empty)  # no message: still a recording
    assert header["bus"].endswith(bus.split(":")[1])
    assert not [r for r in records if r.event == "msg"]


async def test_the_progress_line_shows_the_latest_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It said "0 messages" after 2: it was only drawn when the next record came."""
    stats = RecordingStats(started=trio.current_time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_show_progress, stats, "none.jsonl")
        await trio.testing.wait_all_tasks_blocked()
        stats.messages = 2  # two records within the first half second, then none
        stats.changed.set()
        stats.changed = trio.Event()
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    shown = [line for line in capsys.readouterr().err.split("\r\x1b[K") if line]
    assert shown[0].startswith("0 messages") and shown[-1].startswith("2 messages"), shown


# ------------------------------------------------ item 5: one-shots wait for their answers


async def test_send_waits_for_the_agents_answering_its_announce() -> None:
    """``send --wait-for X`` left as soon as X was there: an agent answering the
    announce 50 ms later (a recorder on a loaded LAN) missed the text."""
    port = free_udp_port()
    bus = f"127:{port}"
    with (
        trio.fail_after(TEST_TIMEOUT),
        trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as announces,
    ):
        announces.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        announces.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await announces.bind(("0.0.0.0", port))
        async with trivy.open_ivy_bus("X", bus), trio.open_nursery() as nursery:
            sender = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trivy", "send", "-b", bus, "--wait-for", "X", "hello"],
                stdout=subprocess.DEVNULL,
            )
            nursery.start_soon(sender.wait)
            while True:
                announce = protocol.decode_announce(await announces.recv(1024))
                if announce.agent_name == "TRIVYSEND":
                    break
            await trio.sleep(0.05)  # the late answer is the scenario, not a wait for it
            stream = await trio.open_tcp_stream("127.0.0.1", announce.port)
            late = RawPeer(stream)
            await late.handshake("LATE", b"1 1\x02^(.*)\n")
            assert await late.line_starting(b"2 ") == b"2 1\x02hello\x03"
            await late.aclose()
    assert sender.returncode == 0

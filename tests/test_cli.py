"""The ``trivy`` command line, run as real processes against a real ivy-python peer.

``python -m trivy`` (and the ``trivy-probe`` console script) run in their own
process, with pipes for stdin/stdout; the ivy-python agent is
``trivy.testing.ivy_python_agent``, driven as in the interop tests. Every test has
its own loopback bus. Synchronisation is on observed output lines and peer
events, never on delays.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio

import trivy
from trivy.testing import wait_for_subscription

from .conftest import free_udp_port
from .test_interop_ivy_python import PEER_NAME, IvyPythonPeer, ivy_python_peer

PROBE_NAME = "TRIVYPROBE"
#: Upper bound of every test; each takes about a second normally.
TEST_TIMEOUT = 20.0
TRIVY = [sys.executable, "-m", "trivy"]


class CliProcess:
    """A running trivy command: write stdin lines, wait for stdout lines.

    Every line read is kept in :attr:`lines`; :meth:`expect` hands each one out
    at most once, so a line that arrived before it was asked for is not lost.
    """

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._handed_out: set[int] = set()
        self._buffer = b""
        self._eof = False

    async def send_line(self, text: str) -> None:
        """Write one line on the command's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def close_stdin(self) -> None:
        """End of input."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def expect(self, pattern: str) -> re.Match[str]:
        """The next line (not handed out yet) that ``pattern`` fully matches."""
        compiled = re.compile(pattern)
        while True:
            for index, line in enumerate(self.lines):
                if index not in self._handed_out and (found := compiled.fullmatch(line)):
                    self._handed_out.add(index)
                    return found
            if self._eof:
                raise AssertionError(f"no line matching {pattern!r}; output: {self.lines}")
            await self._read_more()

    async def _read_more(self) -> None:
        assert self.process.stdout is not None
        data = await self.process.stdout.receive_some(65536)
        if not data:
            self._eof = True
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        self.lines.extend(line.decode() for line in lines)

    async def finish(self) -> int:
        """Read the output to its end, wait for the exit; the exit code."""
        while not self._eof:
            await self._read_more()
        if self._buffer:
            self.lines.append(self._buffer.decode())
            self._buffer = b""
        code = await self.process.wait()
        assert not any("Traceback" in line for line in self.lines), self.lines
        return code


@asynccontextmanager
async def running(
    *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[CliProcess]:
    """Run ``python -m trivy ARGS`` (stderr merged into stdout) until the block exits."""
    process = await trio.lowlevel.open_process(
        [*(command or TRIVY), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env},
    )
    try:
        yield CliProcess(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.aclose()


@asynccontextmanager
async def probe_with_peer(
    *probe_args: str, bind: tuple[str, ...] = (), command: list[str] | None = None
) -> AsyncIterator[tuple[CliProcess, IvyPythonPeer, str]]:
    """An ivy-python peer, then a probe on the same bus, once they have met."""
    port = free_udp_port()
    bus = f"127:{port}"
    async with ivy_python_peer(port, bind=bind) as peer:
        args = ["-b", bus, *probe_args]
        if command is None:
            args.insert(0, "probe")
        async with running(*args, command=command) as probe:
            await probe.expect(rf"{PEER_NAME} connected from 127\.0\.0\.1")
            await peer.expect("connected")
            yield probe, peer, bus


async def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a one-shot ``python -m trivy ARGS`` to its end (``env``: extra variables)."""
    return await trio.run_process(
        [*TRIVY, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


# -------------------------------------------------------------------- probe


async def test_probe_prints_matches_and_sends_stdin_lines() -> None:
    """Matches print as ivy-c does; a stdin line is sent; EOF leaves with BYE."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer(r"^x (\w+) (\w*)", bind=("^hello (.*)",)) as (probe, peer, _):
            await peer.expect("regexp", sender=PROBE_NAME, action="add", regexp=r"^x (\w+) (\w*)")
            await peer.request("send", "sent", text="x a b")
            await probe.expect(f"{PEER_NAME} sent 'a' 'b'")

            await probe.send_line("hello world")
            await probe.expect("-> Sent to 1 peer")
            assert (await peer.expect("msg"))["groups"] == ["world"]
            await probe.send_line("nobody wants this")
            await probe.expect("-> Sent to 0 peers")

            await probe.close_stdin()
            assert await probe.finish() == 0
            await peer.expect("disconnected", name=PROBE_NAME)


async def test_probe_commands() -> None:
    """.help .who .where .bind .showbind .unbind .direct .ping, -s, unknown, .quit."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer("-s", "^first") as (probe, peer, _):
            await probe.send_line(".help")
            await probe.expect(r"\s*\.quit\s+.*")
            await probe.send_line(".who")
            await probe.expect(f"Apps: {PEER_NAME}")
            await probe.send_line(f".where {PEER_NAME}")
            await probe.expect(rf"{PEER_NAME} on 127\.0\.0\.1:{peer.ready['port']}")
            await probe.send_line(".where NOBODY")
            await probe.expect("-> no agent named 'NOBODY'")

            await probe.send_line(".bind '^foo (.*)'")
            sub_id = (await probe.expect(r"-> bound id=(\d+) '\^foo \(\.\*\)'"))[1]
            await peer.expect("regexp", sender=PROBE_NAME, action="add", regexp="^foo (.*)")
            await peer.request("send", "sent", text="foo bar")
            await probe.expect(f"{PEER_NAME} sent 'bar'")
            await probe.send_line(".regexps")
            await probe.expect("our subscriptions:")
            await probe.expect(r"  id=0 '\^first'")
            await probe.expect(rf"  id={sub_id} '\^foo \(\.\*\)'")
            await probe.send_line(f".unbind {sub_id}")
            await probe.expect(rf"-> unbound id={sub_id} '\^foo \(\.\*\)'")
            await peer.expect("regexp", sender=PROBE_NAME, action="remove", id=int(sub_id))
            await probe.send_line(".unbind 99")
            await probe.expect(r"-> \.unbind: .*99.*")
            await probe.send_line(".bind '('")
            await probe.expect(r"-> \.bind: bad regexp .*")

            await probe.send_line(f".direct {PEER_NAME} 7 'hi there'")
            await probe.expect(f"-> Sent direct message to {PEER_NAME}")
            direct = await peer.expect("direct", sender=PROBE_NAME)
            assert (direct["num_id"], direct["text"]) == (7, "hi there")

            await probe.send_line(f".ping {PEER_NAME}")
            await probe.expect(rf"{PEER_NAME} round trip \d+\.\d+ ms")

            bound = await peer.request("bind", "bound", regexp="^baz")  # shown with -s
            await probe.expect(rf"{PEER_NAME} subscribed id={bound['id']} '\^baz'")

            await probe.send_line(".frobnicate")
            await probe.expect(r"-> unknown command '\.frobnicate' \(try \.help\)")
            await probe.send_line(".quit")
            assert await probe.finish() == 0
            await peer.expect("disconnected", name=PROBE_NAME)


async def test_probe_die_command() -> None:
    """.die NAME makes the ivy-python agent leave; the probe sees it go."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer() as (probe, peer, _):
            await probe.send_line(f".die {PEER_NAME}")
            await probe.expect(f"-> Asked {PEER_NAME} to die")
            await peer.expect("die", sender=PROBE_NAME)
            await peer.expect("stopped")
            assert await peer.process.wait() == 0
            await probe.expect(rf"{PEER_NAME} disconnected from 127\.0\.0\.1")
            await probe.send_line(".dieall-yes-i-am-sure")
            await probe.expect("-> Asked 0 agents to die")
            await probe.close_stdin()
            assert await probe.finish() == 0


async def test_probe_sigint_leaves_cleanly() -> None:
    """SIGINT: BYE to the peers (they see the disconnection), exit code 130."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer("^x") as (probe, peer, _):
            probe.process.send_signal(signal.SIGINT)
            await peer.expect("disconnected", name=PROBE_NAME)
            assert await probe.finish() == 130


async def test_probe_alias_script_with_regexp_file_and_name(tmp_path: Path) -> None:
    """``trivy-probe`` is ``trivy probe``; -R binds each line of a file; -n names us."""
    script = Path(sys.executable).with_name("trivy-probe")
    if not script.exists():
        pytest.skip("the trivy-probe console script is not installed")
    regexps = tmp_path / "regexps"
    regexps.write_text("^one (.*)\n\n^two (.*)\n")
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer(
            "-n", "OTHERPROBE", "-R", str(regexps), command=[str(script)]
        ) as (probe, peer, _):
            await peer.expect("regexp", sender="OTHERPROBE", regexp="^two (.*)")
            await peer.request("send", "sent", text="two 2")
            await probe.expect(f"{PEER_NAME} sent '2'")
            await peer.request("send", "sent", text="one 1")
            await probe.expect(f"{PEER_NAME} sent '1'")
            await probe.close_stdin()
            assert await probe.finish() == 0
            await peer.expect("disconnected", name="OTHERPROBE")


# ---------------------------------------------------------------- one-shots


async def test_send_counts_and_exit_codes() -> None:
    """``send`` prints the count: exit 0 when received, 1 when nobody wanted it."""
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(port, bind=("^hello (.*)",)) as peer:
            done = await run("send", "-b", f"127:{port}", "--wait-for", PEER_NAME, "hello x", "y")
            assert done.returncode == 0, done.stderr
            assert done.stdout.decode() == "-> Sent to 1 peer\n-> Sent to 0 peers\n"  # each text
            assert (await peer.expect("msg"))["groups"] == ["x"]

            done = await run("send", "-b", f"127:{port}", "nobody wants this")
            assert done.returncode == 1, done.stderr
            assert done.stdout.decode() == "-> Sent to 0 peers\n"


async def test_send_times_out_without_agent() -> None:
    """No such agent within --timeout: exit 1 and a one-line message."""
    with trio.fail_after(TEST_TIMEOUT):
        done = await run(
            "send", "-b", f"127:{free_udp_port()}", "--wait-for", "GHOST", "--timeout", "0.2", "x"
        )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == ["trivy: no agent 'GHOST' within 0.2 s"]


async def test_who_lists_agents_and_subscriptions() -> None:
    """``who`` lists each agent with its host:port and subscriptions."""
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(port, bind=("^hello (.*)",)) as peer:
            done = await run("who", "-b", f"127:{port}", "--timeout", "0.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == f"{PEER_NAME} 127.0.0.1:{peer.ready['port']}"
    assert re.fullmatch(r"  id=\d+ '\^hello \(\.\*\)'", lines[1]), lines


async def test_ping_and_die() -> None:
    """``ping`` prints a round trip; ``die`` makes the ivy-python process exit."""
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(port) as peer:
            done = await run("ping", "-b", f"127:{port}", PEER_NAME)
            assert done.returncode == 0, done.stderr
            assert re.fullmatch(rf"{PEER_NAME} round trip \d+\.\d+ ms\n", done.stdout.decode())

            done = await run("die", "-b", f"127:{port}", PEER_NAME)
            assert done.returncode == 0, done.stderr
            assert done.stdout.decode() == f"-> Asked {PEER_NAME} to die\n"
            await peer.expect("die", sender="TRIVYDIE")
            assert await peer.process.wait() == 0

            done = await run("ping", "-b", f"127:{port}", "--timeout", "0.2", PEER_NAME)
            assert done.returncode == 1
            assert done.stderr.decode().splitlines() == [
                f"trivy: no agent {PEER_NAME!r} within 0.2 s"
            ]


async def test_ivybus_is_the_default_bus() -> None:
    """Without -b, the one-shots join the bus named by $IVYBUS."""
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with ivy_python_peer(port):
            done = await run("ping", PEER_NAME, env={"IVYBUS": f"127:{port}"})
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{PEER_NAME} round trip \d+\.\d+ ms\n", done.stdout.decode())


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["probe", "-b", "127:2010", "^ok", "(unclosed"], "(unclosed"),
        (["probe", "-b", "127:notaport", "^ok"], "127:notaport"),
        (["send", "-b", "127:99999", "x"], "127:99999"),
        (["who", "-n", "", "-b", "127:2010"], "agent name"),
        (["probe", "-b", "127:2010", "-r", "ready\nnow", "^ok"], "ready message"),
        (["send", "-b", "127:2010", "two\nlines"], "two\\nlines"),
        (["who", "--timeout", "soon"], "soon"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(args: list[str], bad: str) -> None:
    """A bad regexp, bus string or option: exit 2, one line naming it, no traceback.

    The bus is never joined (port 2010 is not touched).
    """
    with trio.fail_after(TEST_TIMEOUT):
        done = await run(*args)
    assert done.returncode == 2
    assert done.stdout == b""
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and bad in error_lines[0], stderr


async def test_probe_prints_any_bytes_escaped_even_on_a_strict_utf8_output() -> None:
    """Non-UTF-8 bytes killed the probe; control characters reached the terminal."""
    port = free_udp_port()
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running("probe", "-b", f"127:{port}", "^(.*)", env=strict) as probe,
            trivy.open_ivy_bus("E\x1b[2Jvil\udce9", f"127.255.255.255:{port}") as evil,
        ):
            peer = await evil.wait_for_peer(PROBE_NAME)
            await probe.expect(r"E\\x1b\[2Jvil\\xe9 connected from 127\.0\.0\.1")
            async with evil.events() as events:
                while not peer.subscriptions:
                    await events.receive()
            evil.send_direct(peer, 1, "caf\udce9 \x1b[31mred\x07")
            await probe.expect(
                r"E\\x1b\[2Jvil\\xe9 sent a direct message, id=1: 'caf\\xe9 \\x1b\[31mred\\x07'"
            )
            evil.send_error(peer, 1, "\x1b[2Jboom")  # also logged by the library, on stderr
            await probe.expect(
                r"trivy: E\\x1b\[2Jvil\\xe9@\S+ sent an error \(id 1\): \\x1b\[2Jboom"
            )
            assert await evil.send("\x1b]0;title\x07 \udcff") == 1
            await probe.expect(r"E\\x1b\[2Jvil\\xe9 sent '\\x1b\]0;title\\x07 \\xff'")
            await probe.close_stdin()
            assert await probe.finish() == 0
            assert not any("\x1b" in line for line in probe.lines)


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = subprocess.run(
            [sys.executable, "-m", "trivy", flag], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0
        assert result.stdout.strip() == f"trivy {trivy.__version__}"


# ------------------------------------------------- ivyprobe parity (both probes)


async def test_probe_says_where_it_is_and_announces_peers_before_their_lines() -> None:
    """``Broadcasting on BUS`` at start; with -s, a peer's ``connected`` line comes
    before its subscriptions (which arrive during its handshake)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer("-s", bind=("^one", "^two")) as (probe, _peer, bus):
            await probe.expect(rf"Broadcasting on 127\.255\.255\.255:{bus.split(':')[1]}")
            await probe.expect(rf"{PEER_NAME} subscribed id=\d+ '\^two'")
            lines = probe.lines
            connected = lines.index(f"{PEER_NAME} connected from 127.0.0.1")
            subscribed = [i for i, line in enumerate(lines) if " subscribed id=" in line]
            assert subscribed and connected < min(subscribed), lines
            assert lines.index(f"Broadcasting on 127.255.255.255:{bus.split(':')[1]}") == 0


async def test_probe_regexps_remove_showbind_toggle_and_die_all() -> None:
    """.regexps (ours, another's), .remove, .showbind on/off, .die-all-yes-i-am-sure."""
    with trio.fail_after(TEST_TIMEOUT):
        async with probe_with_peer("^mine", bind=("^theirs (.*)",)) as (probe, peer, _):
            await probe.send_line(f".regexps {PEER_NAME}")
            await probe.expect(f"{PEER_NAME} subscriptions:")
            await probe.expect(r"  id=\d+ '\^theirs \(\.\*\)'")
            await probe.send_line(".remove 0")
            await probe.expect(r"-> unbound id=0 '\^mine'")
            await peer.expect("regexp", sender=PROBE_NAME, action="remove", id=0)
            await probe.send_line(".regexps")
            await probe.expect("our subscriptions:")

            await probe.send_line(".showbind")  # off by default: now on
            await probe.expect("-> the other agents' subscription changes are shown")
            await peer.command("bind", regexp="^shown")
            bound = await peer.expect("bound", regexp="^shown")
            await probe.expect(rf"{PEER_NAME} subscribed id={bound['id']} '\^shown'")
            await probe.send_line(".showbind")
            await probe.expect("-> the other agents' subscription changes are hidden")
            await peer.command("bind", regexp="^hidden")
            await peer.expect("bound", regexp="^hidden")
            # a direct message after it, on the same connection: once the probe
            # prints it, it has the subscription too
            await peer.request("direct", "direct_sent", to=PROBE_NAME, num_id=1, text="sync")
            await probe.expect(f"{PEER_NAME} sent a direct message, id=1: 'sync'")
            await probe.send_line(f".regexps {PEER_NAME}")
            await probe.expect(r"  id=\d+ '\^hidden'")
            assert not any("'^hidden'" in line and "subscribed" in line for line in probe.lines)

            await probe.send_line(".die-all-yes-i-am-sure")
            await probe.expect("-> Asked 1 agents to die")
            await peer.expect("die", sender=PROBE_NAME)
            await probe.close_stdin()
            assert await probe.finish() == 0


async def test_probe_error_command_reaches_the_agent() -> None:
    """.error NAME ID 'TEXT' sends an ERROR message (seen here by a trivy agent)."""
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy.open_ivy_bus("TARGET", f"127:{port}") as target,
            target.events() as events,
            running("probe", "-b", f"127:{port}") as probe,
        ):
            await probe.expect(r"TARGET connected from 127\.0\.0\.1")
            await probe.send_line(".error TARGET 42 'something broke'")
            await probe.expect("-> Sent error message to TARGET")
            while not isinstance(event := await events.receive(), trivy.ErrorReceived):
                pass
            assert (event.peer.name, event.num_id) == (PROBE_NAME, 42)
            assert event.text == "something broke"
            await probe.send_line(".error TARGET x 'no'")
            await probe.expect(r"-> \.error: bad id 'x'")


async def test_probe_long_options_file_classes_and_verbose(tmp_path: Path) -> None:
    """--ivybus --name --ready --show-bindings, -f FILE, -c WORD,WORD, -v."""
    regexps = tmp_path / "regexps"
    regexps.write_text("^from file (.*)\n")
    port = free_udp_port()
    with trio.fail_after(TEST_TIMEOUT):
        bind = ("^TRACK (.*)", "^OTHER (.*)")
        async with (
            ivy_python_peer(port, bind=bind) as peer,
            running(
                "probe",
                "--ivybus",
                f"127:{port}",
                "--name",
                "LONGPROBE",
                "--ready",
                "TRACK ready",
                "--show-bindings",
                "-f",
                str(regexps),
                "-c",
                "TRACK,STATUS",
                "-v",
            ) as probe,
        ):
            await probe.expect(r"trivy: LONGPROBE joined .*")  # -v: the library's info log
            await probe.expect(rf"{PEER_NAME} subscribed id=\d+ '\^TRACK \(\.\*\)'")
            ready = await peer.expect("msg", sender="LONGPROBE")
            assert ready["groups"] == ["ready"]  # the ready message
            await peer.expect("regexp", sender="LONGPROBE", regexp="^from file (.*)")
            await peer.request("send", "sent", text="from file ok")
            await probe.expect(f"{PEER_NAME} sent 'ok'")
            await probe.send_line("OTHER thing")  # ^OTHER fits no class: unused
            await probe.expect("-> Sent to 0 peers")
            await probe.send_line("TRACK 1")
            await probe.expect("-> Sent to 1 peer")
            await probe.close_stdin()
            assert await probe.finish() == 0


async def test_probe_version_and_its_own_usage_on_a_bad_option() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        version = await run("probe", "-V")
        assert version.returncode == 0
        assert version.stdout.decode().strip() == f"trivy {trivy.__version__}"
        bad = await run("probe", "--bogus")
    assert bad.returncode == 2
    stderr = bad.stderr.decode()
    assert stderr == "python -m trivy probe: error: unrecognized arguments: --bogus (see --help)\n"


async def test_probe_output_never_sticks_to_the_prompt_on_a_terminal() -> None:
    """On a terminal, a line arriving while the user types is printed above the
    prompt, and the prompt comes back with what was typed."""
    import pty

    port = free_udp_port()
    controller, terminal = pty.openpty()
    with trio.fail_after(TEST_TIMEOUT):
        async with trivy.open_ivy_bus("TALKER", f"127:{port}") as talker:
            process = await trio.lowlevel.open_process(
                [*TRIVY, "probe", "-b", f"127:{port}", "^said (.*)"],
                stdin=terminal,
                stdout=terminal,
                stderr=terminal,
            )
            os.close(terminal)
            seen = b""

            async def read_until(wanted: bytes) -> None:
                nonlocal seen
                while wanted not in seen:
                    seen += await trio.to_thread.run_sync(os.read, controller, 4096)

            try:
                await wait_for_subscription(talker, PROBE_NAME, "^said (.*)")
                await read_until(b"> ")  # the prompt
                os.write(controller, b"hel")  # typed, not yet entered
                await read_until(b"hel")
                await talker.send("said hi")
                await read_until(b"TALKER sent 'hi'\r\n> hel")
                assert b"\r\x1b[KTALKER sent 'hi'" in seen
                os.write(controller, b"lo\r")
                await read_until(b"-> Sent to 0 peers")
                await read_until(b"-> Sent to 0 peers\r\n> ")  # reading again
                os.write(controller, b"\x04")  # end of input
                assert await process.wait() == 0
            finally:
                process.kill()
                os.close(controller)


# ------------------------------------------------------------ what failed


@pytest.fixture
def taken_bus() -> Iterator[str]:
    """A bus whose UDP port another socket holds (without SO_REUSEPORT): joining fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", 0))
        yield f"127:{holder.getsockname()[1]}"


def _recording(tmp_path: Path) -> str:
    path = tmp_path / "one.jsonl"
    path.write_text(
        '{"trivy_recording": 1, "bus": "127:2010", "started": "2026-11-27T00:00:00+00:00"}\n'
        '{"t": 0, "event": "msg", "agent": "A", "host": "h", "text": "x"}\n'
    )
    return str(path)


@pytest.mark.parametrize(
    "command",
    [["probe"], ["send", "x"], ["who"], ["daemon", "-p", "0"], ["record", "{tmp}/r.jsonl"],
     ["replay", "{recording}"]],
)  # fmt: skip
async def test_a_bus_that_cannot_be_joined_is_said_in_one_line(
    taken_bus: str, tmp_path: Path, command: list[str]
) -> None:
    args = [arg.format(tmp=tmp_path, recording=_recording(tmp_path)) for arg in command]
    with trio.fail_after(TEST_TIMEOUT):
        done = await run(*args, "-b", taken_bus)
    port = taken_bus.split(":")[1]
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"trivy: cannot join the bus: [Errno {errno.EADDRINUSE}] cannot use UDP port {port}:"
        f" {os.strerror(errno.EADDRINUSE)}"
    ]


async def test_a_daemon_port_in_use_is_said_in_one_line() -> None:
    with socket.socket() as holder, trio.fail_after(TEST_TIMEOUT):
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = await run("daemon", "-b", f"127:{free_udp_port()}", "-p", str(port))
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"trivy: cannot listen on port {port}: [Errno {errno.EADDRINUSE}]"
        f" {os.strerror(errno.EADDRINUSE)}"
    ]


async def test_a_file_record_cannot_create_is_said_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "no such directory" / "r.jsonl"
    with trio.fail_after(TEST_TIMEOUT):
        done = await run("record", str(path), "-b", f"127:{free_udp_port()}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"trivy: cannot record to {str(path)!r}: {os.strerror(errno.ENOENT)}"
    ]


async def test_a_file_replay_cannot_read_is_a_usage_error_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    with trio.fail_after(TEST_TIMEOUT):
        done = await run("replay", str(path), "-b", f"127:{free_udp_port()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"trivy: error: cannot read {str(path)!r}: {os.strerror(errno.ENOENT)}"
    ]

"""How commands end and what they say, as a user in their first hour met them.

``kill`` ends every command as Ctrl-C does (BYE, exit 130); ``die`` and
``ping`` reach every agent of a name; a refusal is one line that names
what; a reader that leaves the pipe ends a command quietly; the API's
common mistakes say what is wrong. Every command is a real process on its
own loopback bus.
"""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest
import trio

import trivy
from trivy import PeerDisconnected
from trivy.testing import wait_for_subscription

from .conftest import free_udp_port
from .test_cli import TEST_TIMEOUT, TRIVY, run, running

ONE_SHOTS = {
    "who": ("TRIVYWHO", ["--timeout", "60"]),
    "ping": ("TRIVYPING", ["--timeout", "60", "NOBODY"]),
    "die": ("TRIVYDIE", ["--timeout", "60", "NOBODY"]),
    "send": ("TRIVYSEND", ["--timeout", "60", "--wait-for", "NOBODY", "x"]),
    "daemon": ("IvyDaemon", ["-p", "0", "-q"]),
}


@pytest.mark.parametrize("command", sorted(ONE_SHOTS))
async def test_kill_ends_a_command_with_bye_and_130(command: str) -> None:
    """send, who, ping, die and daemon died on SIGTERM: no BYE, exit -15."""
    name, options = ONE_SHOTS[command]
    bus = f"127:{free_udp_port()}"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy.open_ivy_bus("WATCHER", bus) as watcher,
            watcher.events() as events,
            running(command, "-b", bus, *options) as process,
        ):
            await watcher.wait_for_peer(name)
            process.process.send_signal(signal.SIGTERM)
            assert await process.finish() == 130
            while True:
                event = await events.receive()
                if isinstance(event, PeerDisconnected) and event.peer.name == name:
                    break
            assert event.reason == "BYE"


@pytest.mark.parametrize("command", ["ping", "die"])
async def test_die_and_ping_reach_every_agent_of_the_name(command: str) -> None:
    """They acted as soon as one agent of the name was there: a twin that
    joined a moment later was missed (two of three left alive by die)."""
    bus = f"127:{free_udp_port()}"
    name = f"TRIVY{command.upper()}"
    asked: list[str] = []
    all_asked = trio.Event()
    finished = trio.Event()
    done: list[subprocess.CompletedProcess[bytes]] = []

    def refuse(peer: trivy.Peer, _num_id: int) -> bool:
        asked.append(peer.name)
        if len(asked) == 3:
            all_asked.set()
        return False

    async def run_command() -> None:
        done.append(await run(command, "-b", bus, "TWIN"))
        finished.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            trivy.open_ivy_bus("TWIN", bus, on_die=refuse) as first,
            trivy.open_ivy_bus("TWIN", bus, on_die=refuse),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(run_command)
            await first.wait_for_peer(name)  # (it is there: then a third twin comes)
            async with trivy.open_ivy_bus("TWIN", bus, on_die=refuse):
                await finished.wait()
                output = done[0].stdout.decode()
                if command == "ping":
                    assert output.count("TWIN round trip") == 3, output
                else:
                    assert output.count("Asked TWIN to die") == 3, output
                    await all_asked.wait()


async def test_a_monitor_that_cannot_listen_names_the_address() -> None:
    pytest.importorskip("hypercorn")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = await run("monitor", "-b", f"127:{free_udp_port()}", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "trivy: cannot serve the monitor:"
        f" cannot listen on 127.0.0.1:{port}: Address already in use"
    )


async def test_a_reader_that_leaves_the_pipe_ends_the_probe_quietly() -> None:
    """`probe | head -2` ended in `trivy: error: [Errno 32] Broken pipe`,
    exit 1, or went on (the write failed in a callback, logged)."""
    bus = f"127:{free_udp_port()}"
    with trio.fail_after(TEST_TIMEOUT):
        probe = await trio.lowlevel.open_process(
            [*TRIVY, "probe", "-b", bus, "^(.*)$"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert probe.stdout is not None and probe.stderr is not None
        async with trivy.open_ivy_bus("TALKER", bus) as talker:
            await wait_for_subscription(talker, "TRIVYPROBE", "^(.*)$")
            await probe.stdout.aclose()  # (the reader leaves)
            await talker.send("a text")  # (its line finds the pipe gone)
            assert await probe.wait() == 0
        said = b""
        while data := await probe.stderr.receive_some():
            said += data
    assert said == b""


async def test_the_apis_common_mistakes_say_what_is_wrong(bus: str) -> None:
    async with trivy.open_ivy_bus("ME", bus) as me:
        with pytest.raises(TypeError, match="an Ivy text is a str, not bytes"):
            await me.send(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="a regexp is a str, not builtin_function"):
            me.bind("^swapped (.*)", print)  # type: ignore[arg-type]
        # (peers refuse a MSG of more groups than that: it could never come)
        with pytest.raises(ValueError, match="a regexp of 1001 groups: peers send 1000 at most"):
            me.subscribe("(a)" * 1001)
        me.subscribe("(a)" * 1000)
    done = await run("who", "-b", "")
    assert done.returncode == 2 and b"None" not in done.stderr, done.stderr


async def test_the_probe_prints_what_a_peer_sent_in_the_order_it_came() -> None:
    """MSGs were printed at once, direct messages and errors when the event
    task ran: after the MSGs that followed them, or never when a DIE came
    next (the probe left first)."""
    bus = f"127:{free_udp_port()}"
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running("probe", "-b", bus, "-n", "TP", "^(.*)$") as probe,
            trivy.open_ivy_bus("SEND", bus) as sender,
        ):
            await wait_for_subscription(sender, "TP", "^(.*)$")
            tp = await sender.wait_for_peer("TP")
            await sender.send("one")
            sender.send_direct(tp, 1, "direct")
            await sender.send("two")
            sender.send_error(tp, 2, "error")
            await sender.send("three")
            sender.send_direct(tp, 3, "last")
            sender.send_die(tp)
            assert await probe.finish() == 0
    said = [line for line in probe.lines if line.startswith("SEND sent")]
    assert said == [
        "SEND sent 'one'",
        "SEND sent a direct message, id=1: 'direct'",
        "SEND sent 'two'",
        "SEND sent an error, id=2: 'error'",
        "SEND sent 'three'",
        "SEND sent a direct message, id=3: 'last'",
    ], probe.lines

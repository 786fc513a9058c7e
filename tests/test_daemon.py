"""``trivy daemon``: lines from plain TCP clients go out on the bus."""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys

import trio
import trio.testing

import trivy
from trivy._daemon import serve_daemon
from trivy._routing import MAX_TEXT
from trivy.testing import wait_for_subscription

TIMEOUT = 10


async def _client(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def test_lines_from_clients_are_sent_on_the_bus(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("LISTENER", bus) as listener,
            trivy.open_ivy_bus("IvyDaemon", bus) as daemon_bus,
            trio.open_nursery() as nursery,
        ):
            sub = listener.subscribe("^hello (.*)")
            await wait_for_subscription(daemon_bus, "LISTENER", "^hello (.*)")
            port = await nursery.start(functools.partial(serve_daemon, daemon_bus, 0, quiet=True))
            client = await _client(port)
            # CRLF, an empty line, and a last line without newline (nc -q 0)
            await client.send_all(b"hello world\r\n\nhello \xc3\xa9t\xc3\xa9\nhello again")
            await client.aclose()
            got = [await sub.receive() for _ in range(3)]
            assert [m.groups for m in got] == [("world",), ("été",), ("again",)]
            assert {m.peer.name for m in got} == {"IvyDaemon"}
            nursery.cancel_scope.cancel()


async def test_clients_and_lines_are_bounded(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("LISTENER", bus) as listener,
            trivy.open_ivy_bus("IvyDaemon", bus) as daemon_bus,
            trio.open_nursery() as nursery,
        ):
            sub = listener.subscribe("^(.*)")
            await wait_for_subscription(daemon_bus, "LISTENER", "^(.*)")
            serving = functools.partial(serve_daemon, daemon_bus, 0, quiet=True, max_clients=2)
            port = await nursery.start(serving)
            first, second = await _client(port), await _client(port)
            await first.send_all(b"one\n")
            assert (await sub.receive()).groups == ("one",)  # both are being served now
            # one client too many: the one idle the longest (second) is closed
            third = await _client(port)
            assert await second.receive_some(10) == b""
            await third.send_all(b"three\n")
            assert (await sub.receive()).groups == ("three",)
            # a line longer than a text may be ends that client only
            await third.send_all(b"x" * (MAX_TEXT + 10))
            assert await third.receive_some(10) == b""
            await first.send_all(b"two\n")
            assert (await sub.receive()).groups == ("two",)
            # many short lines in one read
            fourth = await _client(port)
            await fourth.send_all(b"".join(b"n %d\n" % i for i in range(2000)))
            assert [(await sub.receive()).groups for _ in range(2000)] == [
                (f"n {i}",) for i in range(2000)
            ]
            for stream in (first, second, third, fourth):
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_the_daemon_command_fed_by_a_plain_tcp_client(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("LISTENER", bus) as listener:
            sub = listener.subscribe("^hello (.*)")
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trivy", "daemon", "-b", bus, "-p", "0"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stderr is not None and process.stdout is not None
                banner = b""
                while b"\n" not in banner:
                    banner += await process.stderr.receive_some(1000)
                found = re.search(rb"relaying lines from 127\.0\.0\.1:(\d+) to ", banner)
                assert found, banner
                await listener.wait_for_peer("IvyDaemon")
                report = b""
                while report != b"-> hello shell (1 sent)\n":
                    # (again while the daemon has yet to learn our subscription)
                    assert report in (b"", b"-> hello shell (0 sent)\n"), report
                    # what `echo "hello shell" | nc -q 0 localhost PORT` does
                    with socket.create_connection(("127.0.0.1", int(found[1]))) as client:
                        client.sendall(b"hello shell\n")
                        client.shutdown(socket.SHUT_WR)
                    report = await process.stdout.receive_some(1000)
                    while report and not report.endswith(b"\n"):  # a line may come in parts
                        report += await process.stdout.receive_some(1000)
                match = await sub.receive()
                assert match.groups == ("shell",) and match.peer.name == "IvyDaemon"
                listener.send_die(match.peer)
                assert await process.wait() == 0
            finally:
                process.kill()


async def test_a_flood_of_silent_connections_cannot_push_out_a_client_that_sends(
    bus: str, autojump_clock: trio.testing.MockClock
) -> None:
    """100 idle connections a second closed the sending client after 2 s."""
    lines = 20
    with trio.fail_after(60):
        async with (
            trivy.open_ivy_bus("LISTENER", bus) as listener,
            trivy.open_ivy_bus("IvyDaemon", bus) as daemon_bus,
            trio.open_nursery() as nursery,
        ):
            sub = listener.subscribe("^(line .*)")
            await wait_for_subscription(daemon_bus, "LISTENER", "^(line .*)")
            serving = functools.partial(serve_daemon, daemon_bus, 0, quiet=True, max_clients=8)
            port = await nursery.start(serving)
            silent: list[trio.SocketStream] = []

            async def flood() -> None:
                while True:
                    silent.append(await _client(port))
                    await trio.sleep(0.01)

            legit = await _client(port)
            await legit.send_all(b"line 0\n")
            assert (await sub.receive()).groups == ("line 0",)
            nursery.start_soon(flood)
            for i in range(1, lines):
                await trio.sleep(0.5)  # far idler than the flood's newest
                await legit.send_all(b"line %d\n" % i)
                assert (await sub.receive()).groups == (f"line {i}",)
            assert len(silent) > 500  # the flood went on all along
            nursery.cancel_scope.cancel()
        for stream in (legit, *silent):
            await stream.aclose()


async def test_a_die_line_is_obeyed_as_ivydaemon_does(bus: str) -> None:
    """``.die NAME`` went out as a text; IvyDaemon sends DIE to that agent."""
    died = trio.Event()

    def on_die(peer: trivy.Peer, num_id: int) -> bool:
        died.set()
        return False  # (refused: it stays, to show the next line is a text)

    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("VICTIM", bus, on_die=on_die) as victim,
            trivy.open_ivy_bus("IvyDaemon", bus) as daemon_bus,
            trio.open_nursery() as nursery,
        ):
            sub = victim.subscribe("^(.*)$")
            await wait_for_subscription(daemon_bus, "VICTIM", "^(.*)$")
            port = await nursery.start(functools.partial(serve_daemon, daemon_bus, 0, quiet=True))
            client = await _client(port)
            await client.send_all(b".die VICTIM\nafter\n")
            await died.wait()
            assert (await sub.receive()).groups == ("after",)  # not sent as a text
            await client.aclose()
            nursery.cancel_scope.cancel()

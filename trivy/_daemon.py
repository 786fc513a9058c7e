"""``trivy daemon``: the shell's way onto a bus, as ivy-java's ``IvyDaemon``.

It joins the bus as one agent and listens on a TCP port (3456, on loopback,
by default); every line a client writes is sent on the bus. So a script can
say ``echo "hello" | nc -q 0 localhost 3456`` instead of starting an agent
for each message. A client is anyone who reaches the port: it listens on
loopback unless told otherwise, and what a client can cost is bounded (the
number of clients, the length of a line; each line waits for the bus).
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

import trio

from ._bus import IvyBus
from ._cli_common import EXIT_OK, CommandFailed, bus_options, err, join, out, printable
from ._logs import LogLimiter
from ._routing import MAX_TEXT

__all__ = ["DEFAULT_DAEMON_PORT", "MAX_CLIENTS", "run_daemon", "serve_daemon"]

logger = logging.getLogger("trivy")

#: ivy-java's IvyDaemon port.
DEFAULT_DAEMON_PORT = 3456
#: Clients connected at once; one more is closed at once (each costs a task
#: and a socket, for as long as it stays connected).
MAX_CLIENTS = 64
#: Bytes read from a client at a time.
READ_SIZE = 65536
#: A line that asks, as IvyDaemon's does, for a DIE to the agents of a name.
DIE_COMMAND = ".die "


async def serve_daemon(
    bus: IvyBus,
    port: int = DEFAULT_DAEMON_PORT,
    host: str = "127.0.0.1",
    *,
    quiet: bool = False,
    max_clients: int = MAX_CLIENTS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send every line clients write to ``host:port`` on ``bus``, until cancelled.

    ``task_status.started(port)`` gives the port listened on (useful with
    port 0). A line longer than a text may be (about 1 MiB) ends that
    client's connection; an empty line is skipped. With ``max_clients``
    connected, a new client closes the oldest one that has sent nothing
    yet, or, when all have, the one idle the longest: idle clients cannot
    lock others out, and a flood of connections that never speak cannot
    push out a client that sends.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    log = LogLimiter(logger)
    # → (whether it sent something, when it last did or connected)
    clients: dict[trio.SocketStream, tuple[bool, float]] = {}

    async def handle(stream: trio.SocketStream) -> None:
        if len(clients) >= max_clients:
            idlest = min(clients, key=clients.__getitem__)  # silent ones first
            what = "idle the longest" if clients[idlest][0] else "silent the longest"
            log.warning("daemon: %d clients, closing the one %s", max_clients, what)
            del clients[idlest]
            await idlest.aclose()  # its relay ends (ClosedResourceError)
        clients[stream] = (False, trio.current_time())
        try:
            await _relay(stream, bus, quiet, log, clients)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away, or was closed for a newer one
        finally:
            clients.pop(stream, None)
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        actual = listeners[0].socket.getsockname()[1]
        task_status.started(actual)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _relay(
    stream: trio.SocketStream,
    bus: IvyBus,
    quiet: bool,
    log: LogLimiter,
    clients: dict[trio.SocketStream, tuple[bool, float]],
) -> None:
    pending = bytearray()
    while data := await stream.receive_some(READ_SIZE):
        clients[stream] = (True, trio.current_time())
        # only the new bytes are searched for newlines: a client that
        # trickles a long line byte by byte costs linear time, not quadratic
        start, taken = len(pending), 0
        pending += data
        newline = pending.find(b"\n", start)
        while newline >= 0:
            await _send_line(bus, bytes(pending[taken:newline]), quiet=quiet, log=log)
            taken = newline + 1
            newline = pending.find(b"\n", taken)
        del pending[:taken]
        if len(pending) > MAX_TEXT:
            log.warning("daemon: a line over %d bytes: closing that client", MAX_TEXT)
            return
    # a last line without newline (nc -q 0)
    await _send_line(bus, bytes(pending), quiet=quiet, log=log)


async def _send_line(bus: IvyBus, line: bytes, *, quiet: bool, log: LogLimiter) -> None:
    text = line.rstrip(b"\r").decode("utf-8", "surrogateescape")
    if not text:
        return  # (as ivy-c sends nothing for an empty text)
    if text.startswith(DIE_COMMAND):  # IvyDaemon's command: DIE to the agents of that name
        name = text[len(DIE_COMMAND) :].strip()
        peers = bus.peers_named(name)
        for peer in peers:
            bus.send_die(peer)
        if not quiet:
            out(f"-> DIE sent to {len(peers)} agent(s) named {printable(name)}")
        return
    try:
        count = await bus.send(text)
    except ValueError as exc:  # not a text Ivy can carry
        log.warning("daemon: line not sent: %s", exc)
        return
    if not quiet:
        out(f"-> {printable(text)} ({count} sent)")


async def run_daemon(args: argparse.Namespace) -> int:
    """``trivy daemon``: join the bus, relay TCP lines to it until interrupted.

    Raises:
      CommandFailed: the bus could not be joined, or the port listened on.
    """
    options = bus_options(args.name, args.bus)
    async with join(options) as bus, trio.open_nursery() as nursery:
        serving = partial(serve_daemon, bus, args.port, args.host, quiet=args.quiet)
        try:
            port = await nursery.start(serving)
        except OSError as exc:  # our TCP port, not the bus's
            raise CommandFailed(f"cannot listen on port {args.port}: {exc}") from None
        if not args.quiet:
            err(f"relaying lines from {args.host}:{port} to {bus.bus_address}")
    return EXIT_OK

"""``python -m trivy probe``: an interactive ``ivyprobe`` for trivy.

Joins the bus, prints the texts that match its regexps (as ivy-c's
``ivyprobe`` does: ``NAME sent 'g1' 'g2'``) and peers' comings and goings,
and sends each line typed on stdin; lines starting with ``.`` are commands
(``.help`` lists them). It leaves at end of input, on ``.quit`` or on SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import trio

from ._bus import IvyBus
from ._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    bus_options,
    check_regexp,
    join,
    out,
)
from ._events import (
    BusEvent,
    DirectMessage,
    ErrorReceived,
    Peer,
    PeerConnected,
    PeerDisconnected,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)

__all__ = ["Probe", "format_match", "run_probe", "terminal_restored", "unquote"]

#: Seconds ``.ping`` waits for a PONG.
PING_TIMEOUT = 5.0

PROBE_HELP = """\
Commands (anything else is sent as a message):
  .help                      this help
  .quit                      leave the bus
  .who                       list the agents on the bus
  .where NAME                host:port of agent NAME
  .bind 'RE'                 subscribe to RE
  .unbind ID                 remove our subscription ID
  .showbind                  list our subscriptions
  .direct NAME ID 'TEXT'     send a direct message to NAME
  .ping NAME                 round trip to NAME, in ms
  .die NAME                  ask NAME to leave the bus
  .dieall-yes-i-am-sure      ask every agent to leave the bus"""


def format_match(peer: Peer, groups: Sequence[str]) -> str:
    """ivy-c's ivyprobe line for a match: ``NAME sent 'g1' 'g2'``."""
    return f"{peer.name} sent" + "".join(f" '{group}'" for group in groups)


def unquote(text: str) -> str:
    """Strip blanks, then one pair of surrounding single (or double) quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class _StdinReader:
    """Lines from stdin, read in a worker thread so that trio stays responsive.

    On a terminal, ``input()`` gives ``readline`` line editing and history;
    otherwise raw ``os.read`` is used (no lock a shutdown could trip on).
    """

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()
        self._buffer = b""
        self._eof = False
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (input() uses it once imported)

    def _read_line_blocking(self) -> str | None:
        if self.interactive:
            try:
                return input("> ")
            except EOFError:
                return None
        while b"\n" not in self._buffer and not self._eof:
            data = os.read(sys.stdin.fileno(), 65536)
            self._buffer += data
            self._eof = not data
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "surrogateescape")

    async def readline(self) -> str | None:
        """The next line without its newline, or None at end of input."""
        return await trio.to_thread.run_sync(self._read_line_blocking, abandon_on_cancel=True)


@contextlib.contextmanager
def terminal_restored() -> Iterator[None]:
    """Put the terminal settings back on exit (readline may be mid-line)."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    except (ImportError, OSError, ValueError):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Probe:
    """The interactive probe: bindings that print, and stdin commands."""

    def __init__(self, bus: IvyBus) -> None:
        self.bus = bus
        self.done = False

    def print_match(self, peer: Peer, *groups: str) -> None:
        """The binding callback: ``NAME sent 'g1' 'g2'``."""
        out(format_match(peer, groups))

    def bind(self, regexp: str) -> int:
        """Bind ``regexp`` to :meth:`print_match`; returns its id."""
        return self.bus.bind(self.print_match, regexp)

    async def show_events(self, events: trio.abc.ReceiveChannel[BusEvent], bindings: bool) -> None:
        """Print connections, direct messages, errors and (with -s) subscriptions."""
        async for event in events:
            if isinstance(event, PeerConnected):
                out(f"{event.peer.name} connected from {event.peer.host}")
            elif isinstance(event, PeerDisconnected):
                out(f"{event.peer.name} disconnected from {event.peer.host}")
            elif isinstance(event, DirectMessage):
                out(f"{event.peer.name} sent a direct message, id={event.num_id}: '{event.text}'")
            elif isinstance(event, ErrorReceived):
                out(f"{event.peer.name} sent an error, id={event.num_id}: '{event.text}'")
            elif not bindings:
                continue
            elif isinstance(event, SubscriptionAdded):
                out(f"{event.peer.name} subscribed id={event.subscription_id} '{event.regexp}'")
            elif isinstance(event, SubscriptionChanged):
                out(
                    f"{event.peer.name} changed id={event.subscription_id}"
                    f" '{event.old_regexp}' -> '{event.regexp}'"
                )
            elif isinstance(event, SubscriptionRemoved):
                out(f"{event.peer.name} unsubscribed id={event.subscription_id} '{event.regexp}'")

    def _peers(self, name: str) -> list[Peer]:
        peers = self.bus.peers_named(name)
        if not peers:
            out(f"-> no agent named {name!r}")
        return peers

    async def command(self, line: str) -> None:
        """Run one stdin line: a ``.command`` or a message to send."""
        if not line.startswith("."):
            if line:
                count = await self.bus.send(line)
                out(f"-> Sent to {count} peers")
            return
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        handler = self._COMMANDS.get(name)
        if handler is None:
            out(f"-> unknown command {name!r} (try .help)")
            return
        try:
            await handler(self, rest)
        except (ValueError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            out(f"-> {name}: {message}")

    async def _help(self, rest: str) -> None:
        for help_line in PROBE_HELP.splitlines():
            out(help_line)

    async def _quit(self, rest: str) -> None:
        self.done = True

    async def _who(self, rest: str) -> None:
        out("Apps:" + "".join(f" {peer.name}" for peer in self.bus.peers))

    async def _where(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .where NAME")
        for peer in self._peers(rest):
            out(f"{peer.name} on {peer.host}:{peer.port}")

    async def _bind(self, rest: str) -> None:
        regexp = unquote(rest)
        if not regexp:
            raise ValueError("usage: .bind 'REGEXP'")
        sub_id = self.bind(regexp)
        out(f"-> bound id={sub_id} '{regexp}'")

    async def _unbind(self, rest: str) -> None:
        try:
            sub_id = int(rest)
        except ValueError:
            raise ValueError("usage: .unbind ID") from None
        regexp = self.bus.unbind(sub_id)
        out(f"-> unbound id={sub_id} '{regexp}'")

    async def _showbind(self, rest: str) -> None:
        subscriptions = self.bus.subscriptions
        if not subscriptions:
            out("-> no subscriptions")
        for sub_id, regexp in sorted(subscriptions.items()):
            out(f"id={sub_id} '{regexp}'")

    async def _direct(self, rest: str) -> None:
        parts = rest.split(None, 2)
        if len(parts) < 3:
            raise ValueError("usage: .direct NAME ID 'TEXT'")
        name, id_text, text = parts
        try:
            num_id = int(id_text)
        except ValueError:
            raise ValueError(f"bad id {id_text!r}") from None
        text = unquote(text)
        if "\n" in text:  # pragma: no cover - stdin lines have none
            raise ValueError("a text cannot contain a newline")
        for peer in self._peers(name):
            self.bus.send_direct(peer, num_id, text)
            out(f"-> Sent direct message to {peer.name}")

    async def _ping(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .ping NAME")
        for peer in self._peers(rest):
            try:
                with trio.fail_after(PING_TIMEOUT):
                    seconds = await self.bus.ping(peer)
            except trio.TooSlowError:
                out(f"-> {peer.name}: no answer within {PING_TIMEOUT:g} s")
                continue
            except Exception as exc:  # the peer left meanwhile
                out(f"-> {peer.name}: {exc}")
                continue
            out(f"{peer.name} round trip {seconds * 1000:.3f} ms")

    async def _die(self, rest: str) -> None:
        if not rest:
            raise ValueError("usage: .die NAME")
        for peer in self._peers(rest):
            self.bus.send_die(peer)
            out(f"-> Asked {peer.name} to die")

    async def _dieall(self, rest: str) -> None:
        peers = self.bus.peers
        for peer in peers:
            self.bus.send_die(peer)
        out(f"-> Asked {len(peers)} agents to die")

    _COMMANDS: ClassVar[dict[str, Callable[[Probe, str], Any]]] = {
        ".help": _help,
        ".quit": _quit,
        ".who": _who,
        ".where": _where,
        ".bind": _bind,
        ".unbind": _unbind,
        ".showbind": _showbind,
        ".direct": _direct,
        ".ping": _ping,
        ".die": _die,
        ".dieall-yes-i-am-sure": _dieall,
    }


def _probe_regexps(args: argparse.Namespace) -> list[str]:
    regexps = list(args.regexps)
    if args.regexp_file is not None:
        try:
            with open(args.regexp_file, encoding="utf-8") as file:
                regexps += [line.rstrip("\r\n") for line in file if line.strip()]
        except OSError as exc:
            raise UsageError(f"cannot read -R {args.regexp_file!r}: {exc.strerror}") from None
    for regexp in regexps:
        check_regexp(regexp)
    return regexps


async def run_probe(args: argparse.Namespace) -> int:
    """``trivy probe``: join, bind, print, read commands until EOF/.quit/SIGINT."""
    regexps = _probe_regexps(args)
    options = bus_options(args.name, args.bus, args.ready)
    interrupted = False
    reader = _StdinReader()

    def on_die(peer: Peer, num_id: int) -> None:
        out(f"{peer.name} asked us to die")

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with (
            join(options, on_die=on_die) as bus,
            bus.events() as events,
            trio.open_nursery() as nursery,
        ):
            probe = Probe(bus)
            for regexp in regexps:
                probe.bind(regexp)

            async def watch_signals() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(probe.show_events, events, args.show_bindings)
            while not probe.done:
                line = await reader.readline()
                if line is None:
                    break
                await probe.command(line.rstrip("\r"))
            nursery.cancel_scope.cancel()
    return EXIT_INTERRUPTED if interrupted else EXIT_OK

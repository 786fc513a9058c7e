"""The ``trivy`` command: an ``ivyprobe`` for trivy, plus a few one-shots.

``python -m trivy probe [-b BUS] [-n NAME] [-s] [-r READY] [-R FILE] REGEXP…``
joins the bus, prints what it receives and sends what is typed on stdin, as
ivy-c's ``ivyprobe`` does. ``send``, ``who``, ``ping`` and ``die`` join the
bus, do one thing and leave.

Exit codes: 0 success; 1 nobody received, agent not found or timed out;
2 usage error (bad argument, bad bus string, bad regexp); 130 interrupted.

The name ``trivy`` is also that of a widely installed container security
scanner: ``python -m trivy …`` (or ``trivy-probe``) is the unambiguous form.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import trio

from . import protocol
from ._bus import IvyBus, open_ivy_bus
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

__all__ = ["build_parser", "main", "probe_main"]

PROG = "python -m trivy"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Seconds the one-shots wait for an agent by default.
DEFAULT_WAIT = 5.0
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


class UsageError(Exception):
    """A bad command-line argument: one line, exit code 2."""


def out(text: str) -> None:
    """Print one line on stdout, flushed at once (the output may be a pipe)."""
    print(text, flush=True)


def err(text: str) -> None:
    """Print one line on stderr, prefixed with the program name."""
    print(f"trivy: {text}", file=sys.stderr, flush=True)


def format_match(peer: Peer, groups: Sequence[str]) -> str:
    """ivy-c's ivyprobe line for a match: ``NAME sent 'g1' 'g2'``."""
    return f"{peer.name} sent" + "".join(f" '{group}'" for group in groups)


def unquote(text: str) -> str:
    """Strip blanks, then one pair of surrounding single (or double) quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def check_regexp(regexp: str) -> None:
    """Raise UsageError unless trivy can subscribe with ``regexp``."""
    if "\n" in regexp:
        raise UsageError(f"bad regexp {regexp!r}: contains a newline")
    try:
        re.compile(protocol.expand_intervals(regexp))
    except (re.error, ValueError) as exc:
        raise UsageError(f"bad regexp {regexp!r}: {exc}") from None


def check_bus(name: str, bus: str | None, ready_message: str | None = None) -> None:
    """Raise UsageError unless ``open_ivy_bus`` accepts these arguments."""
    try:
        IvyBus(name, bus, ready_message=ready_message)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------- parser
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _add_common(parser: argparse.ArgumentParser, default_name: str) -> None:
    parser.add_argument(
        "-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS, then 127:2010)"
    )
    parser.add_argument(
        "-n", "--name", default=default_name, help=f"our agent name (default: {default_name})"
    )


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser, "TRIVYPROBE")
    parser.add_argument(
        "-s", "--show-bindings", action="store_true", help="show peers' subscription changes"
    )
    parser.add_argument("-r", "--ready", default=None, help="ready message, sent to each peer")
    parser.add_argument(
        "-R", "--regexp-file", default=None, metavar="FILE", help="bind one regexp per line of FILE"
    )
    parser.add_argument("regexps", nargs="*", metavar="REGEXP", help="regexps to bind")


def build_parser() -> argparse.ArgumentParser:
    """The ``trivy`` argument parser, with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ivy bus tools built on trivy. Use `python -m trivy …`: the name `trivy`"
        " alone may run the unrelated container security scanner.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    probe = commands.add_parser(
        "probe", help="join the bus, print what matches, send stdin lines (ivyprobe)"
    )
    _add_probe_arguments(probe)

    send = commands.add_parser("send", help="send texts once an agent is there")
    _add_common(send, "TRIVYSEND")
    send.add_argument("--wait-for", metavar="NAME", default=None, help="wait for this agent")
    send.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_WAIT, help="seconds to wait (5)"
    )
    send.add_argument("texts", nargs="+", metavar="TEXT", help="texts to send")

    who = commands.add_parser("who", help="list the agents and their subscriptions")
    _add_common(who, "TRIVYWHO")
    who.add_argument("--timeout", type=_positive_float, default=1.0, help="seconds to listen (1)")

    ping = commands.add_parser("ping", help="round trip to an agent, in ms")
    _add_common(ping, "TRIVYPING")
    ping.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_WAIT, help="seconds to wait (5)"
    )
    ping.add_argument("agent", metavar="NAME")

    die = commands.add_parser("die", help="ask an agent to leave the bus")
    _add_common(die, "TRIVYDIE")
    die.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_WAIT, help="seconds to wait (5)"
    )
    die.add_argument("agent", metavar="NAME")
    return parser


# -------------------------------------------------------------------- probe
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
def _terminal_restored() -> Iterator[None]:
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
                seconds = await self.bus.ping(peer, timeout=PING_TIMEOUT)
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
    check_bus(args.name, args.bus, args.ready)
    interrupted = False
    reader = _StdinReader()

    def on_die(peer: Peer, num_id: int) -> None:
        out(f"{peer.name} asked us to die")

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with (
            open_ivy_bus(args.name, args.bus, ready_message=args.ready, on_die=on_die) as bus,
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


# ---------------------------------------------------------------- one-shots
def _who_is(name: str | None) -> str:
    return "agent" if name is None else f"agent {name!r}"


async def run_send(args: argparse.Namespace) -> int:
    """``trivy send``: wait for an agent, send each text, print the count."""
    check_bus(args.name, args.bus)
    for text in args.texts:
        if "\n" in text:
            raise UsageError(f"bad TEXT {text!r}: contains a newline")
    async with open_ivy_bus(args.name, args.bus) as bus:
        try:
            await bus.wait_for_peer(args.wait_for, timeout=args.timeout)
        except trio.TooSlowError:
            err(f"no {_who_is(args.wait_for)} within {args.timeout:g} s")
            return EXIT_FAILED
        total = 0
        for text in args.texts:
            total += await bus.send(text)
    out(f"-> Sent to {total} peers")
    return EXIT_OK if total else EXIT_FAILED


async def run_who(args: argparse.Namespace) -> int:
    """``trivy who``: listen ``--timeout`` seconds, list agents and subscriptions."""
    check_bus(args.name, args.bus)
    async with open_ivy_bus(args.name, args.bus) as bus:
        await trio.sleep(args.timeout)
        peers = bus.peers
        for peer in peers:
            out(f"{peer.name} {peer.host}:{peer.port}")
            for sub_id, regexp in sorted(peer.subscriptions.items()):
                out(f"  id={sub_id} '{regexp}'")
    if not peers:
        err(f"no agent within {args.timeout:g} s")
        return EXIT_FAILED
    return EXIT_OK


async def _find(bus: IvyBus, name: str, timeout: float) -> Peer | None:
    try:
        return await bus.wait_for_peer(name, timeout=timeout)
    except trio.TooSlowError:
        err(f"no agent {name!r} within {timeout:g} s")
        return None


async def run_ping(args: argparse.Namespace) -> int:
    """``trivy ping NAME``: print the round trip to each agent named NAME."""
    check_bus(args.name, args.bus)
    async with open_ivy_bus(args.name, args.bus) as bus:
        if await _find(bus, args.agent, args.timeout) is None:
            return EXIT_FAILED
        status = EXIT_OK
        for peer in bus.peers_named(args.agent):
            try:
                seconds = await bus.ping(peer, timeout=args.timeout)
            except trio.TooSlowError:
                err(f"{peer.name}: no answer within {args.timeout:g} s")
                status = EXIT_FAILED
                continue
            except Exception as exc:  # it left meanwhile
                err(f"{peer.name}: {exc}")
                status = EXIT_FAILED
                continue
            out(f"{peer.name} round trip {seconds * 1000:.3f} ms")
    return status


async def run_die(args: argparse.Namespace) -> int:
    """``trivy die NAME``: ask every agent named NAME to leave the bus."""
    check_bus(args.name, args.bus)
    async with open_ivy_bus(args.name, args.bus) as bus:
        if await _find(bus, args.agent, args.timeout) is None:
            return EXIT_FAILED
        for peer in bus.peers_named(args.agent):
            bus.send_die(peer)
            out(f"-> Asked {peer.name} to die")
    return EXIT_OK


RUNNERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "probe": run_probe,
    "send": run_send,
    "who": run_who,
    "ping": run_ping,
    "die": run_die,
}


def _run(args: argparse.Namespace) -> int:
    try:
        with _terminal_restored():
            status: int = trio.run(RUNNERS[args.command], args)
            return status
    except UsageError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:
        err(f"cannot join the bus: {exc}")
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trivy`` / ``python -m trivy``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return _run(args)


def probe_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trivy-probe``: the same as ``trivy probe``."""
    parser = argparse.ArgumentParser(
        prog="trivy-probe",
        description="Join an Ivy bus, print what matches REGEXPs, send stdin lines"
        " (python -m trivy probe).",
    )
    _add_probe_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "probe"
    return _run(args)

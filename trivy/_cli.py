"""The ``trivy`` command: an ``ivyprobe`` for trivy, plus a few one-shots.

``python -m trivy probe [-b BUS] [-n NAME] [-s] [-r READY] [-R FILE] REGEXP…``
joins the bus, prints what it receives and sends what is typed on stdin, as
ivy-c's ``ivyprobe`` does. ``send``, ``who``, ``ping`` and ``die`` join the
bus, do one thing and leave. ``daemon`` relays lines from TCP clients to
the bus, as ivy-java's ``IvyDaemon``. This module is the front end (arguments, exit
codes); the commands are in :mod:`trivy._probe` and :mod:`trivy._oneshots`.

Exit codes: 0 success; 1 nobody received, agent not found, timed out, or
the bus, a port or a file could not be had (one line says which); 2 usage
error (bad argument, bad bus string, bad regexp); 130 interrupted.

The name ``trivy`` is also that of a widely installed container security
scanner: ``python -m trivy …`` (or ``trivy-probe``) is the unambiguous form.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import trio

from ._cli_bridge import add_bridge_arguments, run_bridge
from ._cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
    err,
    log_escaped,
    run_until_interrupted,
    stdout_to_devnull,
)
from ._cli_monitor import add_monitor_arguments, run_monitor
from ._daemon import DEFAULT_DAEMON_PORT, run_daemon
from ._oneshots import run_die, run_ping, run_send, run_who
from ._probe import run_probe, terminal_restored
from ._record_cli import add_record_arguments, add_replay_arguments, run_record, run_replay

__all__ = ["build_parser", "main", "probe_main"]

PROG = "python -m trivy"
#: Each subcommand's parser, by name (filled by :func:`build_parser`).
SUBPARSERS: dict[str, argparse.ArgumentParser] = {}
#: Seconds the one-shots wait for an agent by default.
DEFAULT_WAIT = 5.0
#: Set, an unexpected error shows its traceback (a user sees one line).
TRACEBACK_ENV = "TRIVY_TRACEBACK"
#: Seconds without an agent joining before ``send`` sends: agents answer an
#: announce within milliseconds on a LAN; this leaves room for a loaded one.
DEFAULT_SETTLE = 0.2


class _OneLineErrors(argparse.ArgumentParser):
    """A parser whose usage errors are one line on stderr (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _MixedParser(_OneLineErrors):
    """A parser that takes options and positionals in any order, as users type them.

    (``record FILE -b BUS REGEXP``: argparse alone stops at the first
    option after positionals, with "unrecognized arguments".)
    """

    _parsing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._parsing:  # (the intermixed parse calls this, twice)
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is within 0..65535, not {value}")
    return value


def _agent_name(text: str) -> str:
    if not text or "\n" in text:
        raise argparse.ArgumentTypeError(f"an agent name is one non-empty line, not {text!r}")
    return text


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
    parser.add_argument(
        "-b",
        "--bus",
        "--ivybus",
        default=None,
        help="NETWORKS:PORT (default: $IVYBUS, then 127:2010)",
    )
    parser.add_argument(
        "-n", "--name", default="TRIVYPROBE", help="our agent name (default: TRIVYPROBE)"
    )
    parser.add_argument(
        "-s", "--show-bindings", action="store_true", help="show peers' subscription changes"
    )
    parser.add_argument(
        "-r",
        "--ready",
        default=None,
        help="ready message, sent to each peer (default: 'NAME Ready'; '': none)",
    )
    parser.add_argument(
        "-R",
        "-f",
        "--regexp-file",
        default=None,
        metavar="FILE",
        help="bind one regexp per line of FILE",
    )
    parser.add_argument(
        "-c",
        "--classes",
        default=None,
        metavar="WORD,WORD",
        help="the message classes we send: peers' regexps that fit none are ignored",
    )
    parser.add_argument(
        "--send-to-self",
        action="store_true",
        help="our texts reach our own regexps too (ivy-java's -s)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only what agents send, and answers"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument("-d", "--debug", action="store_true", help="log everything (as -vv)")
    parser.add_argument("-V", "--version", action="version", version=_version())
    parser.add_argument("regexps", nargs="*", metavar="REGEXP", help="regexps to bind")


def _version() -> str:
    from . import __version__

    return f"trivy {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The ``trivy`` argument parser, with its subcommands."""
    parser = _OneLineErrors(
        prog=PROG,
        description="Ivy bus tools built on trivy. Use `python -m trivy …`: the name `trivy`"
        " alone may run the unrelated container security scanner.",
    )
    parser.add_argument("-V", "--version", action="version", version=_version())
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_MixedParser
    )

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
    send.add_argument(
        "--settle",
        type=_positive_float,
        default=DEFAULT_SETTLE,
        metavar="SECONDS",
        help="before sending, wait until no agent has joined for this long, so that"
        f" those answering our announce get the texts ({DEFAULT_SETTLE:g}; 0: send at once)",
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
    ping.add_argument("agent", metavar="NAME", type=_agent_name)

    die = commands.add_parser("die", help="ask an agent to leave the bus")
    _add_common(die, "TRIVYDIE")
    die.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_WAIT, help="seconds to wait (5)"
    )
    die.add_argument("agent", metavar="NAME", type=_agent_name)

    daemon = commands.add_parser(
        "daemon", help="send every line TCP clients write (ivy-java's IvyDaemon)"
    )
    _add_common(daemon, "IvyDaemon")
    daemon.add_argument(
        "-p", "--port", type=_port, default=DEFAULT_DAEMON_PORT, help="TCP port (3456; 0: any)"
    )
    daemon.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    daemon.add_argument("-q", "--quiet", action="store_true", help="print nothing per line")

    recorder = commands.add_parser("record", help="record the bus to a file (JSON Lines)")
    _add_common(recorder, "TRIVYRECORD")
    add_record_arguments(recorder)
    player = commands.add_parser("replay", help="play a recording onto the bus")
    player.add_argument(
        "-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS, then 127:2010)"
    )
    add_replay_arguments(player)
    add_bridge_arguments(commands)
    add_monitor_arguments(commands)
    SUBPARSERS.clear()
    SUBPARSERS.update(commands.choices)
    return parser


#: The coroutine function run for each subcommand; it returns the exit code.
RUNNERS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "probe": run_probe,
    "send": run_send,
    "who": run_who,
    "ping": run_ping,
    "die": run_die,
    "daemon": run_daemon,
    "record": run_record,
    "replay": run_replay,
    "bridge": run_bridge,
    "monitor": run_monitor,
}


#: Commands that watch SIGINT and SIGTERM themselves (to close a recording,
#: restore the terminal...); the others are run until one comes.
WATCH_SIGNALS_THEMSELVES = frozenset({"probe", "record", "replay", "bridge", "monitor"})


async def _until_interrupted(args: argparse.Namespace) -> int:
    """Run the command; SIGINT or SIGTERM ends it as Ctrl-C does (BYE, 130)."""
    code = EXIT_INTERRUPTED

    async def command() -> None:
        nonlocal code
        code = await RUNNERS[args.command](args)

    return EXIT_INTERRUPTED if await run_until_interrupted(command) else code


def _run(args: argparse.Namespace) -> int:
    log_escaped()
    runner = RUNNERS[args.command]
    try:
        with terminal_restored():
            if args.command in WATCH_SIGNALS_THEMSELVES:
                return trio.run(runner, args)
            return trio.run(_until_interrupted, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = _alone(exc)
        if isinstance(failure, BrokenPipeError):  # (our output's reader left: `| head`)
            stdout_to_devnull()
            return EXIT_OK
        if isinstance(failure, UsageError):
            err(f"error: {failure}")
            return EXIT_USAGE
        if isinstance(failure, CommandFailed):
            err(str(failure))
            return EXIT_FAILED
        if isinstance(failure, OSError):  # the system refused something: say what
            err(f"error: {failure}")
            return EXIT_FAILED
        if os.environ.get(TRACEBACK_ENV):
            raise
        err(
            f"unexpected error, a bug: {type(failure).__name__}: {failure}"
            f" ({TRACEBACK_ENV}=1 shows where; please report it)"
        )
        return EXIT_FAILED


def _alone(exc: BaseException) -> BaseException:
    """``exc``, or the one exception inside it if it is an exception group
    (a command's nursery wraps what its body raises)."""
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return _alone(inner[0]) if len(inner) == 1 else exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trivy`` / ``python -m trivy``; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the usage of the subcommand, not the top-level one
        SUBPARSERS[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return _run(args)


def probe_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trivy-probe``: the same as ``trivy probe``."""
    parser = _MixedParser(
        prog="trivy-probe",
        description="Join an Ivy bus, print what matches REGEXPs, send stdin lines"
        " (python -m trivy probe).",
    )
    _add_probe_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "probe"
    return _run(args)

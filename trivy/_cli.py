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
from collections.abc import Awaitable, Callable, Sequence

import trio

from ._cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
    err,
    log_escaped,
)
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
    parser.add_argument("-r", "--ready", default=None, help="ready message, sent to each peer")
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
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    parser.add_argument("-V", "--version", action="version", version=_version())
    parser.add_argument("regexps", nargs="*", metavar="REGEXP", help="regexps to bind")


def _version() -> str:
    from . import __version__

    return f"trivy {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The ``trivy`` argument parser, with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ivy bus tools built on trivy. Use `python -m trivy …`: the name `trivy`"
        " alone may run the unrelated container security scanner.",
    )
    parser.add_argument("-V", "--version", action="version", version=_version())
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

    daemon = commands.add_parser(
        "daemon", help="send every line TCP clients write (ivy-java's IvyDaemon)"
    )
    _add_common(daemon, "IvyDaemon")
    daemon.add_argument(
        "-p", "--port", type=int, default=DEFAULT_DAEMON_PORT, help="TCP port (3456; 0: any)"
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
}


def _run(args: argparse.Namespace) -> int:
    log_escaped()
    try:
        with terminal_restored():
            return trio.run(RUNNERS[args.command], args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = _alone(exc)
        if isinstance(failure, UsageError):
            err(f"error: {failure}")
            return EXIT_USAGE
        if isinstance(failure, CommandFailed):
            err(str(failure))
            return EXIT_FAILED
        raise  # a bug: its traceback


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
    parser = argparse.ArgumentParser(
        prog="trivy-probe",
        description="Join an Ivy bus, print what matches REGEXPs, send stdin lines"
        " (python -m trivy probe).",
    )
    _add_probe_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "probe"
    return _run(args)

"""``python -m trivy monitor``: its arguments, and running it (the extra loaded only then)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from ._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandFailed,
    UsageError,
    os_error_in,
    run_until_interrupted,
)

__all__ = ["add_monitor_arguments", "run_monitor"]


def add_monitor_arguments(commands: Any) -> None:
    """The ``monitor`` subcommand and its options."""
    monitor = commands.add_parser(
        "monitor", help="see the bus and plot it live, in a browser (trivy[monitor])"
    )
    monitor.add_argument(
        "-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS, then 127:2010)"
    )
    monitor.add_argument("--port", type=int, default=8100, help="the page's TCP port (8100)")
    monitor.add_argument(
        "--bind",
        default="127.0.0.1",
        help="the address to serve on (127.0.0.1); off loopback, pages need the printed token",
    )
    monitor.add_argument("-n", "--name", default="TRIVYMONITOR", help="the agent's name")
    monitor.add_argument(
        "--kinds",
        default=None,
        metavar="REGEXP",
        help="group texts by its group 'kind' and plot its other named groups by name"
        " (texts it does not match go by their first word)",
    )


async def run_monitor(args: argparse.Namespace) -> int:
    """Serve the page until interrupted."""
    try:
        from .monitor import MonitorOptions
        from .monitor import run_monitor as serve_monitor
    except ImportError as exc:
        raise UsageError(
            f"the monitor needs the monitor extra (pip install 'trivy[monitor]'): {exc}"
        ) from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port is 0..65535, not {args.port}")
    try:
        options = MonitorOptions(
            bus=args.bus, host=args.bind, port=args.port, name=args.name, kinds=args.kinds
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def monitor() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_monitor, options)
            print(f"trivy: the monitor is at {running.url}", file=sys.stderr, flush=True)

    try:
        interrupted = await run_until_interrupted(monitor)
    except Exception as exc:  # (nurseries wrap it in groups)
        failure = os_error_in(exc)
        if failure is None:
            raise
        raise CommandFailed(f"cannot serve the monitor: {failure.strerror or failure}") from None
    return EXIT_INTERRUPTED if interrupted else EXIT_OK

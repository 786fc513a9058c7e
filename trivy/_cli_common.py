"""What the ``trivy`` commands share: exit codes, output, argument checks, joining.

The command modules (:mod:`trivy._probe`, :mod:`trivy._oneshots`) and the
front end (:mod:`trivy._cli`) all import from here, and this module imports
none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from ._bus import IvyBus
from ._events import Peer
from ._local import wire_regexp
from ._open import run_bus
from ._options import BusOptions

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "bus_options",
    "check_regexp",
    "err",
    "join",
    "out",
]

EXIT_OK = 0
#: Nobody received, agent not found, or timed out.
EXIT_FAILED = 1
#: A bad argument, bus string or regexp.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command-line argument: one line, exit code 2."""


def out(text: str) -> None:
    """Print one line on stdout, flushed at once (the output may be a pipe)."""
    print(text, flush=True)


def err(text: str) -> None:
    """Print one line on stderr, prefixed with the program name."""
    print(f"trivy: {text}", file=sys.stderr, flush=True)


def check_regexp(regexp: str) -> None:
    """Raise UsageError unless trivy can subscribe with ``regexp``."""
    try:
        wire_regexp(regexp)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def bus_options(name: str, bus: str | None, ready_message: str | None = None) -> BusOptions:
    """Our agent's checked options; UsageError (naming the bad value) if refused.

    Made before joining, so that a bad name, bus string or ready message is
    reported as a usage error and no socket is opened.
    """
    try:
        return BusOptions(agent_name=name, bus=bus, ready_message=ready_message)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def join(
    options: BusOptions, on_die: Callable[[Peer, int], None] | None = None
) -> AbstractAsyncContextManager[IvyBus]:
    """Join the bus that ``options`` describe, for an ``async with`` block."""
    return run_bus(options, on_die=on_die)

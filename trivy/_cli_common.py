"""What the ``trivy`` commands share: exit codes, output, argument checks, joining.

The command modules (:mod:`trivy._probe`, :mod:`trivy._oneshots`) and the
front end (:mod:`trivy._cli`) all import from here, and this module imports
none of them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

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
    "CommandFailed",
    "UsageError",
    "bus_options",
    "check_regexp",
    "err",
    "join",
    "log_escaped",
    "os_error_in",
    "out",
    "printable",
]

EXIT_OK = 0
#: Nobody received, agent not found, or timed out.
EXIT_FAILED = 1
#: A bad argument, bus string or regexp.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command-line argument: one line, exit code 2."""


class CommandFailed(Exception):
    """What kept the command from doing its job (a port in use, a file that
    cannot be written), said where it happened: one line, exit code 1."""


def printable(text: str) -> str:
    """``text`` safe for a terminal: what is not printable is shown escaped.

    Peers choose their names and texts: control characters and ANSI escape
    sequences must not reach the terminal, and bytes that were not UTF-8
    (ivy-c passes Latin-1 through) are shown as ``\\xNN``, so that printing
    never fails whatever the output's encoding.
    """
    if text.isprintable():
        return text
    # (str.translate: a character at a time in C; one at a time in Python
    # took 0.5 s for a peer's 1 MiB of control characters)
    escaped = text.translate(_bmp_escapes())
    if escaped.isprintable() or max(escaped) <= "\uffff":
        return escaped
    return _ASTRAL.sub(_escaped_if_not_printable, escaped)  # (a call per astral character)


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _escaped_if_not_printable(found: re.Match[str]) -> str:
    char = found.group()
    return char if char.isprintable() else _escaped(char)


@functools.cache
def _bmp_escapes() -> dict[int, str]:
    """The escape of every character of the Basic Multilingual Plane that
    is not printable (made once: about 20 ms)."""
    return {code: _escaped(chr(code)) for code in range(0x10000) if not chr(code).isprintable()}


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


class _EscapedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def log_escaped() -> None:
    """Send trivy's log records to stderr escaped, as everything the command prints.

    Without this, Python's last-resort handler would write what peers put in
    them (names, ERROR texts) to the terminal as it is.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(_EscapedFormatter("trivy: %(message)s"))
    handler.setLevel(logging.WARNING)
    library = logging.getLogger("trivy")
    library.addHandler(handler)
    library.propagate = False


async def run_until_interrupted(run: Callable[[], Awaitable[object]]) -> bool:
    """Run ``run()`` until it returns or SIGINT or SIGTERM cancels it; True if interrupted.

    A bus joined inside ``run`` still says BYE as the cancellation unwinds
    it, and a recording is closed complete: ``kill`` ends a command as
    Ctrl-C does.
    """
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await run()
            nursery.cancel_scope.cancel()
    return interrupted


def stdout_to_devnull() -> None:
    """stdout's reader is gone (``| head``): what is still written goes
    nowhere, not into an error as Python exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def out(text: str) -> None:
    """Print one line on stdout, escaped, flushed at once (the output may be a pipe)."""
    print(printable(text), flush=True)


def err(text: str) -> None:
    """Print one line on stderr, prefixed with the program name."""
    print(f"trivy: {printable(text)}", file=sys.stderr, flush=True)


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


@asynccontextmanager
async def join(
    options: BusOptions, on_die: Callable[[Peer, int], None] | None = None
) -> AsyncIterator[IvyBus]:
    """Join the bus that ``options`` describe, for an ``async with`` block.

    Raises:
      CommandFailed: the bus's listener or UDP socket could not be opened.
    """
    joined = False
    try:
        async with run_bus(options, on_die=on_die) as bus:
            joined = True
            yield bus
    except Exception as exc:
        failure = os_error_in(exc)
        if joined or failure is None:  # not ours to explain
            raise
        raise CommandFailed(f"cannot join the bus: {failure}") from None


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError ``exc`` is, or holds (nurseries wrap errors in groups)."""
    found = error_in(exc, OSError)
    return found if isinstance(found, OSError) else None


def error_in(
    exc: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The error of one of ``kinds`` that ``exc`` is, or holds in its groups."""
    if isinstance(exc, kinds):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = error_in(inner, kinds)
        if found is not None:
            return found
    return None

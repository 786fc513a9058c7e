"""``python -m trivy probe``: an interactive ``ivyprobe`` for trivy.

Joins the bus, prints the texts that match its regexps (as ivy-c's
``ivyprobe`` does: ``NAME sent 'g1' 'g2'``) and peers' comings and goings,
and sends each line typed on stdin; lines starting with ``.`` are commands
(``.help`` lists them, :mod:`trivy._probe_commands` runs them). It leaves
at end of input, on ``.quit`` or on SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

import trio

from ._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    check_regexp,
    join,
    out,
    printable,
    run_until_interrupted,
    stdout_to_devnull,
)
from ._events import Peer
from ._options import BusOptions
from ._probe_commands import Probe

__all__ = ["run_probe", "terminal_restored"]

#: What the prompt looks like on a terminal.
PROMPT = "> "


class _StdinReader:
    """Lines from stdin, read in a worker thread so that trio stays responsive.

    On a terminal, ``input()`` gives ``readline`` line editing and history;
    otherwise raw ``os.read`` is used (no lock a shutdown could trip on).
    """

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()
        #: True while the prompt is on the screen, waiting for a line.
        self.prompting = False
        #: True from input() until readline has shown the prompt: lines
        #: printed then wait in ``held`` (they would cut the prompt in two).
        self.starting = False
        self.held: list[str] = []
        self.lock = threading.Lock()
        self._buffer = b""
        self._eof = False
        self._prompt_hook = False
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # (input() uses it once imported)

                # Prompting from when readline has shown the prompt and reads,
                # not from before input(): a line printed in between would
                # draw a prompt of its own, which readline does not own.
                readline.set_pre_input_hook(self._reading)
                self._prompt_hook = True

    def _reading(self) -> None:
        with self.lock:
            self.starting, self.prompting = False, True
            held, self.held = self.held, []
        if held:  # printed above the prompt, which comes back under them
            sys.stdout.write("".join(f"\r\x1b[K{line}\n" for line in held) + PROMPT)
            sys.stdout.flush()

    def _read_line_blocking(self) -> str | None:
        if self.interactive:
            with self.lock:
                self.starting = self._prompt_hook
                self.prompting = not self._prompt_hook
            try:
                return input(PROMPT)
            except EOFError:
                return None
            finally:
                with self.lock:
                    self.starting = self.prompting = False
                    held, self.held = self.held, []
                for text in held:  # (no prompt was shown after all)
                    print(text, flush=True)
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


class _Printer:
    """Prints a line; on a terminal, above the prompt and what is being typed.

    Without this, a line arriving while the user types would be glued to
    the prompt (``> hellAGENT sent ...``).
    """

    def __init__(self, reader: _StdinReader) -> None:
        self._reader = reader
        #: Set when stdout's reader left (``| head``): the probe then ends.
        self.reader_gone = trio.Event()
        self._readline = None
        if reader.interactive:
            with contextlib.suppress(ImportError):
                import readline

                self._readline = readline

    def __call__(self, text: str) -> None:
        try:
            self._print(text)
        except BrokenPipeError:  # (called from the bus's callbacks: ended here)
            stdout_to_devnull()
            self.reader_gone.set()

    def _print(self, text: str) -> None:
        reader = self._reader
        if self._readline is None:
            out(text)
            return
        with reader.lock:
            if reader.starting:  # readline is drawing the prompt: after it
                reader.held.append(printable(text))
                return
            if not reader.prompting:
                out(text)
                return
            typed = self._readline.get_line_buffer()
            sys.stdout.write(f"\r\x1b[K{printable(text)}\n{PROMPT}{typed}")
            sys.stdout.flush()


def _probe_regexps(args: argparse.Namespace) -> list[str]:
    regexps = list(args.regexps)
    if args.regexp_file is not None:
        try:
            with open(args.regexp_file, encoding="utf-8") as file:
                regexps += [line.rstrip("\r\n") for line in file if line.strip()]
        except OSError as exc:
            raise UsageError(f"cannot read {args.regexp_file!r}: {exc.strerror}") from None
    for regexp in regexps:
        check_regexp(regexp)
    return regexps


def _options(args: argparse.Namespace) -> BusOptions:
    try:
        return BusOptions(
            agent_name=args.name,
            bus=args.bus,
            # "TRIVYPROBE Ready", as ivy-c's "IVYPROBE Ready"; -r '' sends none
            ready_message=f"{args.name} Ready" if args.ready is None else args.ready or None,
            message_classes=args.classes,
            send_to_self=args.send_to_self,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def run_probe(args: argparse.Namespace) -> int:
    """``trivy probe``: join, bind, print, read commands until EOF/.quit/SIGINT."""
    regexps = _probe_regexps(args)
    options = _options(args)
    verbose = 2 if args.debug else args.verbose
    if verbose:
        logging.getLogger("trivy").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        for handler in logging.getLogger("trivy").handlers:
            handler.setLevel(logging.NOTSET)
    reader = _StdinReader()
    printer = _Printer(reader)

    probe: Probe | None = None

    def on_die(peer: Peer, num_id: int) -> None:
        if probe is not None:
            probe.show_pending()  # (what came before the DIE, first)
        printer(f"{peer.name} asked us to die")

    async def session() -> None:
        async with (
            join(options, on_die=on_die) as bus,
            bus.events() as events,
            trio.open_nursery() as nursery,
        ):
            nonlocal probe
            probe = Probe(bus, printer, show_bindings=args.show_bindings, quiet=args.quiet)
            probe.say(f"Broadcasting on {bus.bus_address}")
            for regexp in regexps:
                probe.bind(regexp)
            nursery.start_soon(probe.show_events, events)
            nursery.start_soon(_cancel_when, printer.reader_gone, nursery.cancel_scope)
            while not probe.done:
                line = await reader.readline()
                if line is None:
                    break
                await probe.command(line.rstrip("\r"))
            nursery.cancel_scope.cancel()

    return EXIT_INTERRUPTED if await run_until_interrupted(session) else EXIT_OK


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()

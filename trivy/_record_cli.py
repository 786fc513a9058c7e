"""``trivy record`` and ``trivy replay``: the command-line front of :mod:`trivy.recording`."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from functools import partial

import trio

from ._cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandFailed,
    UsageError,
    check_regexp,
    err,
    error_in,
    os_error_in,
    run_until_interrupted,
)
from ._matching import safe_search
from ._options import BusOptions
from ._playlist import selector
from .recording import (
    MAX_AGENTS,
    FilePlaylist,
    Record,
    RecordingError,
    RecordingStats,
    ReplayStats,
    record,
    replay,
    too_many_senders,
)

__all__ = ["add_record_arguments", "add_replay_arguments", "run_record", "run_replay"]

#: Seconds between two progress lines on a terminal.
PROGRESS_EVERY = 0.5


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="where to write (.gz: compressed)")
    parser.add_argument(
        "regexps",
        nargs="*",
        default=[],  # (without it, argparse says REGEXP is required when nothing is given)
        metavar="REGEXP",
        help="record only texts one of these finds",
    )


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording made by trivy record")
    parser.add_argument("--speed", type=float, default=1.0, help="how much faster (0: at once)")
    parser.add_argument("--loop", action="store_true", help="play again until interrupted")
    parser.add_argument("--from", dest="start", type=float, default=0.0, help="seconds in")
    parser.add_argument("--to", dest="end", type=float, default=math.inf, help="seconds in")
    parser.add_argument("--only", metavar="REGEXP", default=None, help="texts it finds only")
    parser.add_argument(
        "--agent", action="append", default=None, metavar="NAME", help="this sender's texts only"
    )
    parser.add_argument("--as", dest="as_agent", metavar="NAME", help="one agent plays them all")
    parser.add_argument(
        "--max-agents",
        type=int,
        default=MAX_AGENTS,
        metavar="N",
        help=f"senders played by agents of their own, at most ({MAX_AGENTS})",
    )
    parser.add_argument(
        "--wait-for", action="append", default=[], metavar="NAME", help="wait for this agent"
    )


def _progress(text: str) -> None:
    sys.stderr.write(f"\r\x1b[K{text}")
    sys.stderr.flush()


def _size(path: str) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        return "?"
    return f"{size / 1024:.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def _progress_line(stats: RecordingStats, path: str) -> str:
    rate = stats.messages / max(trio.current_time() - stats.started, 1e-9)
    return f"{stats.messages} messages, {rate:.0f}/s, {len(stats.agents)} agents, {_size(path)}"


async def _show_progress(stats: RecordingStats, path: str) -> None:
    """A progress line, at most every PROGRESS_EVERY seconds, and always the latest."""
    while True:
        shown = (stats.messages, stats.events)
        _progress(_progress_line(stats, path))
        await trio.sleep(PROGRESS_EVERY)
        while (stats.messages, stats.events) == shown:
            await stats.changed.wait()


async def run_record(args: argparse.Namespace) -> int:
    """``trivy record FILE``: until Ctrl-C or a DIE; the file is complete either way.

    Raises:
      CommandFailed: the file could not be written, or the bus joined.
    """
    for regexp in args.regexps:
        check_regexp(regexp)
        _check_filter(regexp, "a regexp")
    try:
        BusOptions(agent_name=args.name, bus=args.bus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    terminal = sys.stderr.isatty()
    progress: list[RecordingStats] = []

    async def recording() -> None:
        async with trio.open_nursery() as nursery:

            async def recorder(task_status: trio.TaskStatus[RecordingStats]) -> None:
                await record(
                    args.file, args.bus, name=args.name, regexps=args.regexps,
                    task_status=task_status,
                )  # fmt: skip
                nursery.cancel_scope.cancel()  # (a DIE: the progress line ends too)

            progress.append(await nursery.start(recorder))
            if terminal:
                nursery.start_soon(_show_progress, progress[0], args.file)

    try:
        interrupted = await run_until_interrupted(recording)
    except Exception as exc:
        failure = os_error_in(exc)
        if failure is None:
            raise
        if terminal:
            sys.stderr.write("\n")
        if failure.filename is None:  # record() names its file in its errors: the bus's
            raise CommandFailed(f"cannot join the bus: {failure}") from None
        raise CommandFailed(f"cannot record to {args.file!r}: {failure.strerror}") from None
    if terminal and progress:  # (what was drained while leaving counts too)
        _progress(_progress_line(progress[0], args.file) + "\n")
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _check_filter(regexp: str, what: str) -> None:
    """UsageError unless ``regexp`` can filter texts within the guard's bounds."""
    try:
        safe_search(regexp)
    except (re.error, ValueError, OverflowError, RecursionError) as exc:
        raise UsageError(f"{what} {regexp!r}: {exc}") from None


def _without_unplayable(
    path: str, played: FilePlaylist, selected: Callable[[Record], bool], most: int
) -> FilePlaylist:
    """``played`` without the texts of senders no agent can play (an empty
    name, say), each said on stderr."""
    unplayable = set()
    for name in sorted(played.senders):
        try:
            BusOptions(agent_name=name)
        except ValueError as exc:
            unplayable.add(name)
            err(f"the texts of {name!r} are skipped: {exc} (--as NAME plays them)")
    if not unplayable:
        return played
    return FilePlaylist(path, lambda r: selected(r) and r.agent not in unplayable, most)


async def run_replay(args: argparse.Namespace) -> int:
    """``trivy replay FILE``: play it onto the bus, then leave (or loop).

    Raises:
      UsageError: the file cannot be read, or is not a recording.
      CommandFailed: the bus could not be joined.
    """
    try:
        BusOptions(agent_name="TRIVYREPLAY", bus=args.bus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    speed = math.inf if args.speed == 0 else args.speed
    if not speed > 0:
        raise UsageError(f"--speed must be positive (0: at once): {args.speed}")
    if args.only is not None:
        _check_filter(args.only, "--only")
    if args.max_agents < 1:
        raise UsageError(f"--max-agents must be at least 1: {args.max_agents}")
    selected = selector(start=args.start, end=args.end, only=args.only, agents=args.agent)
    try:  # (checked whole, streamed: the file is never held in memory)
        played = FilePlaylist(args.file, selected, args.max_agents)
    except RecordingError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.file!r}: {exc.strerror}") from None
    if not played.count:
        err(f"nothing to replay in {args.file} with these options")
        return EXIT_FAILED
    senders = {args.as_agent} if args.as_agent else played.senders
    if len(senders) > args.max_agents:
        raise UsageError(f"{args.file}: {too_many_senders(args.max_agents)}")
    if args.as_agent is not None:
        try:
            BusOptions(agent_name=args.as_agent)
        except ValueError as exc:
            raise UsageError(f"--as {args.as_agent!r}: {exc}") from None
    else:  # (a peer may give a name no agent of ours can take: skip its texts)
        played = _without_unplayable(args.file, played, selected, args.max_agents)
    terminal = sys.stderr.isatty()
    result: list[ReplayStats] = []

    def on_sent(stats: ReplayStats) -> None:
        if terminal and stats.sent % 100 == 0:
            done = stats.sent - stats.passes * played.count
            _progress(f"pass {stats.passes + 1}: {done} of {played.count} messages")

    async def play() -> None:
        result.append(
            await replay(
                played,
                args.bus,
                speed=speed,
                origin=args.start,
                loop=args.loop,
                as_agent=args.as_agent,
                wait_for=args.wait_for,
                on_sent=on_sent,
                max_agents=args.max_agents,
            )
        )

    try:
        interrupted = await run_until_interrupted(partial(play))
    except Exception as exc:
        changed = error_in(exc, RecordingError)  # (the file changed under a later pass)
        if changed is not None:
            raise CommandFailed(f"{args.file}: {changed}") from None
        failure = os_error_in(exc)
        if failure is None:
            raise
        raise CommandFailed(f"cannot join the bus: {failure}") from None  # replay opens no file
    if terminal:
        sys.stderr.write("\n")
    if result:
        stats = result[0]
        unheard = f" ({stats.unheard} reached no one)" if stats.unheard else ""
        skipped = f", {stats.skipped} skipped (see the guide)" if stats.skipped else ""
        err(f"replayed {stats.sent} messages from {args.file}{unheard}{skipped}")
    return EXIT_INTERRUPTED if interrupted else EXIT_OK

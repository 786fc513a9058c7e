"""Play recorded texts onto a bus with their timing (:func:`trivy.recording.replay`)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import attrs
import trio

from ._open import open_ivy_bus
from ._options import BusOptionsArgs
from ._playlist import FilePlaylist, ListPlaylist
from ._recording_format import Record

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LATENESS_KEPT", "MAX_AGENTS", "SKIP_SLICE", "ReplayStats", "replay", "too_many_senders"]

#: Senders a replay plays, each by an agent of its own (a socket, tasks and
#: a connection to every peer each): more need ``as_agent``.
MAX_AGENTS = 64
#: Seconds a replay reads records it skips before it lets the loop run.
SKIP_SLICE = 0.002
#: Lateness samples a replay keeps (a uniform sample of a longer first pass).
LATENESS_KEPT = 100_000


def too_many_senders(most: int) -> str:
    """Why a replay of more than ``most`` senders is refused."""
    return (
        f"more than {most} senders, each an agent of its own: play them all as one"
        " (--as NAME), or allow more (--max-agents)"
    )


@attrs.define
class ReplayStats:
    """What a replay did: texts sent, how many reached no one, and how late
    each text of the first pass was (seconds)."""

    sent: int = 0
    unheard: int = 0
    passes: int = 0
    #: How late the texts of the first pass were (at most
    #: :data:`LATENESS_KEPT` of them, a uniform sample past that).
    lateness: list[float] = attrs.field(factory=list)
    #: Texts not sent: over what our MSG line carries, or of a sender that
    #: appeared in the file after it was checked.
    skipped: int = 0

    def late(self, seconds: float, number: int) -> None:
        """The ``number``-th text of the first pass (from 0) was ``seconds`` late."""
        if number < LATENESS_KEPT:
            self.lateness.append(seconds)
        elif (kept := random.randrange(number + 1)) < LATENESS_KEPT:
            self.lateness[kept] = seconds


async def replay(
    records: Iterable[Record] | FilePlaylist | ListPlaylist,
    bus: str | None = None,
    *,
    speed: float = 1.0,
    origin: float = 0.0,
    loop: bool = False,
    as_agent: str | None = None,
    wait_for: Iterable[str] = (),
    on_sent: Callable[[ReplayStats], None] | None = None,
    max_agents: int = MAX_AGENTS,
    **options: Unpack[BusOptionsArgs],
) -> ReplayStats:
    """Play the ``msg`` records onto ``bus`` with their timing (``speed``: how
    much faster; ``math.inf``: as fast as possible).

    ``records``: a list, or a :class:`FilePlaylist` (a file checked once and
    streamed, never held in memory: what ``trivy replay`` plays).

    A record at ``t`` is sent ``(t - origin) / speed`` seconds after the
    start (``origin``: the recording's second the replay starts at, 0 by
    default, so a silence before the first text is kept). Each recorded
    sender is played by an agent of its name, on the bus before the first
    text (``as_agent``: one agent plays them all). Those agents first wait
    for the agents named in ``wait_for``: without it, agents already on the
    bus may not have connected to them yet, and the first texts reach no
    one (counted in :attr:`ReplayStats.unheard`). Times are kept against
    the start, so errors do not add up; with ``loop``, it plays again
    (each pass starting when the previous one's latest text was due) until
    cancelled. Each sender is an agent of its own: more than ``max_agents``
    of them is a ``ValueError`` (play them all ``as_agent``).
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive: {speed!r}")
    played = records if isinstance(records, FilePlaylist | ListPlaylist) else ListPlaylist(records)
    stats = ReplayStats()
    if not played.count:
        return stats
    names = sorted({as_agent} if as_agent else played.senders)
    if len(names) > max_agents:
        raise ValueError(too_many_senders(max_agents))
    async with AsyncExitStack() as stack:
        agents = {
            n: await stack.enter_async_context(open_ivy_bus(n, bus, **options)) for n in names
        }
        for peer_name in wait_for:
            for agent in agents.values():
                await agent.wait_for_peer(peer_name)
        length = (played.last_t - origin) / speed  # one pass, in seconds
        begin = trio.current_time()
        while True:
            # (records not played are read too: millions of them must not hold the loop)
            turn = time.perf_counter()
            with contextlib.closing(played.scan()) as scanned:
                for r in scanned:
                    if r is None:
                        if time.perf_counter() - turn > SKIP_SLICE:
                            await trio.lowlevel.checkpoint()
                            turn = time.perf_counter()
                        continue
                    due = begin + (r.t - origin) / speed
                    if due > trio.current_time():
                        await trio.sleep_until(due)
                    else:
                        await trio.lowlevel.checkpoint()
                    turn = time.perf_counter()
                    if stats.passes == 0:
                        stats.late(trio.current_time() - due, stats.sent + stats.skipped)
                    player = agents.get(as_agent or r.agent)
                    try:  # (None: a sender the check did not see; the file changed)
                        count = None if player is None else await player.send(r.text)
                    except ValueError:  # (longer than our MSG carries)
                        count = None
                    if count is None:
                        stats.skipped += 1
                        continue
                    stats.unheard += not count
                    stats.sent += 1
                    if on_sent is not None:
                        on_sent(stats)
            stats.passes += 1
            if not loop:
                return stats
            begin += length if math.isfinite(length) else 0.0
    return stats  # (an agent told to die ended the replay)

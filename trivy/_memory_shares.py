"""One bound on the bytes held for all the peers, shared out among them.

Each peer has its own limits (``send_buffer_limit`` for what we queue for
it, ``MAX_LINE_LENGTH`` for its unfinished line), but a thousand peers at
those limits would hold gigabytes. :class:`MemoryShares` gives every peer
a share of ``max_buffered_bytes`` instead, once the peers are many enough
for their own limits to add up past it, and drops the peers holding the
most when the total is over the bound all the same (data a peer held
before the others joined).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from ._send_buffer import MAX_EXCESS, MAX_LINE_LENGTH

__all__ = ["DEFAULT_MAX_BUFFERED_BYTES", "MIN_SHARE", "HoldsMemory", "MemoryShares"]

#: Bytes held for all the peers at once: queued for them and their
#: unfinished lines. 16 peers keep the default 4 MiB queue, 128 their 1 MiB
#: line; a flood of 1,000 connections that never read gets 128 KiB each way,
#: not 21 MiB.
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
#: The smallest share of each kind: a line this long is one every Ivy
#: implementation sends (a long name or ready message), and a peer's
#: queue this large still absorbs a burst of hundreds of texts.
MIN_SHARE = 64 * 1024


class HoldsMemory(Protocol):
    """A peer's session as the shares see it."""

    @property
    def bytes_held(self) -> int:
        """Bytes held for the peer: queued, unsent, and its unfinished line."""
        ...

    def limit_memory(self, send_limit: int, max_line_length: int, max_excess: int) -> None:
        """Apply new limits (data already held over them stays, or is dropped)."""
        ...

    def abort(self, reason: str = "") -> None:
        """Close the connection at once."""
        ...


class MemoryShares:
    """Shares ``max_bytes`` among the peers, half for output, half for input.

    A share is a power of two, so the limits of every peer change a dozen
    times at most as the peers come and go, not on every join.
    """

    def __init__(
        self, max_bytes: int, send_limit: int, max_line_length: int = MAX_LINE_LENGTH
    ) -> None:
        self.max_bytes = max_bytes
        self._own = (send_limit, max_line_length, MAX_EXCESS)
        self.limits = self._own
        #: Whether a session may hold more than the current limits allow
        #: (they shrank since it filled up): the total must be checked.
        self._maybe_over = False

    def limits_for(self, peers: int) -> tuple[int, int, int]:
        """(send limit, line limit, excess) of each of ``peers`` peers.

        A peer's share is half the bound over the peers, for each way: its
        unfinished line may take all of it, what we queue for it half (the
        limit), and a waiting send's excess past the limit the other half.
        Each is the peer's own limit while that is smaller.
        """
        send_limit, line_limit, excess = self._own
        half = self.max_bytes // (2 * max(peers, 1))
        share = max(MIN_SHARE, 1 << max(half.bit_length() - 1, 0))
        return (min(send_limit, share // 2), min(line_limit, share), min(excess, share // 2))

    def peers_changed(
        self, sessions: Collection[HoldsMemory], newcomer: HoldsMemory | None = None
    ) -> None:
        """Give each of ``sessions`` its share; after ``newcomer`` joined, enforce the total.

        A newcomer (one of ``sessions``) may find the others holding more
        than the bound allows now: the largest holders are closed until the
        rest fit.
        """
        limits = self.limits_for(len(sessions))
        if limits != self.limits:
            if newcomer is not None:
                self._maybe_over = True  # (held under the old, larger limits)
            self.limits = limits
            for session in sessions:
                session.limit_memory(*limits)
        elif newcomer is not None and limits != self._own:
            newcomer.limit_memory(*limits)
        # (while every peer keeps its own queue and line limits, only the
        # excess of waiting sends is shared: no total to enforce; and while
        # every session is within limits whose sum fits, neither)
        most_each = sum(limits)
        if (
            newcomer is not None
            and limits[:2] != self._own[:2]
            and (self._maybe_over or len(sessions) * most_each > self.max_bytes)
        ):
            self._maybe_over = self._drop_largest(sessions, most_each)

    def _drop_largest(self, sessions: Iterable[HoldsMemory], most_each: int) -> bool:
        """Close the largest holders until the total fits; returns whether a
        session left holds more than ``most_each`` (its limits' sum).

        While none does, the total fits: the shares are made so that every
        session full to its limits is at most ``max_bytes`` in all.
        """
        held = [(session.bytes_held, session) for session in sessions]
        total = sum(size for size, _ in held)
        if total > self.max_bytes:
            held.sort(key=lambda pair: pair[0], reverse=True)
            while total > self.max_bytes:
                size, session = held.pop(0)
                session.abort(f"holding {size} bytes while the peers' {self.max_bytes} are used up")
                total -= size
        return any(size > most_each for size, _ in held)

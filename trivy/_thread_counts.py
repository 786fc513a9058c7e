"""How many peer subscriptions a text matches, counted from another thread.

ivy-python's ``send_msg`` returns that count at once, from whatever thread
calls it. The compat layer hands a program thread's texts to the bus thread
without waiting for it, and takes their count here, in the caller's thread,
from the same table the bus thread routes with: every change of the table
holds its lock (:attr:`~trivy._matching.RegexpTable.lock`), and so does this
count, so it never sees a change half made.

Only the counts that cost little are taken here: a short text, a few
candidate regexps, each of them cheap for that text (no guarded or timed
search, no budget that could skip it). For anything else this answers
None and the caller asks the bus thread, whose send counts exactly. The
lock is therefore held for what the guard's cost model calls cheap, which
is also how long the bus thread may wait for it when a peer's
subscriptions change (the model underestimates some nested counted
repeats: see the known limits in the porting guide).
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._bus import IvyBus

__all__ = [
    "MAX_COUNTED_CANDIDATES",
    "MAX_COUNTED_LENGTH",
    "count_matches",
    "share_with_threads",
]

#: Longest text counted in the caller's thread (characters).
MAX_COUNTED_LENGTH = 1024
#: Most candidate regexps (those whose literal prefix the text has, and
#: those with none) a count in the caller's thread tries.
MAX_COUNTED_CANDIDATES = 64


def share_with_threads(bus: IvyBus) -> None:
    """Let other threads count matches on ``bus``: its table's changes take a
    lock from now on (they take none otherwise). Called in the bus thread."""
    table = bus._router.table
    if isinstance(table.lock, nullcontext):
        table.lock = threading.Lock()


def count_matches(bus: IvyBus, text: str) -> int | None:
    """The number of peer subscriptions ``text`` matches, or None when the bus
    thread should count it (see the module's docstring).

    Safe from any thread. The count is that of the table at the call: a peer
    that subscribes or leaves meanwhile is counted as it then was, as the
    send that follows routes it.
    """
    length = len(text)
    if not length:
        return 0  # (nothing is sent for an empty text)
    if length > MAX_COUNTED_LENGTH or "\n" in text:
        return None
    if not text.isascii():  # (a lone surrogate: the bus thread's send raises it)
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
    router = bus._router
    budgets = router.budgets
    if length > budgets.light_above:  # (-1: being recomputed) a send that may be timed
        return None
    table = router.table
    lock = table.lock
    if isinstance(lock, nullcontext):  # (not shared: only the bus thread may read it)
        return None
    count = 0
    with lock:
        single = table.single_length  # (the router's look-up, inline as there)
        bucket = table.single_bucket
        candidates = bucket.get(text[:single], ()) if single else table.candidates(text)
        if len(candidates) > MAX_COUNTED_CANDIDATES:
            return None
        for entry in candidates:
            if length > entry.costly_above or length > entry.safe_length:
                return None  # a search the router times, or the guarded engine's
            find = entry.find  # (an attribute called as a method is not specialized)
            if find(text) is not None:
                for peer, ids in entry.peers.items():
                    if not peer.closing:  # (as the router: a peer being left gets nothing)
                        count += len(ids)
    return count

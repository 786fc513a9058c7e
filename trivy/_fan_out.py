"""A send whose matches take too long: each peer gets one MSG more at most.

Each subscription bound holds (50,000 for all the peers, 100 a peer past
them, a cost bound per regexp), yet a text that matches many of them costs
a send a MSG each, built apart when the regexps differ: 999 peers of 100
cheap regexps of 42 groups, all matching, made one send 0.8 s of CPU. So
``route`` looks at the clock every :data:`FAN_OUT_CHECK` MSGs made or
refused (:class:`FanOutClock`), within a regexp's subscribers too (one ``^x``
may have 150,000); once it has spent ``SEND_BUDGET`` since the first look,
:func:`route_rest` finishes the send: each peer gets the first MSG of its
own that matches, and no more, so the subscriptions of many cannot starve
another's; a regexp none of whose peers is left to serve is not even
searched. Its loops are over a regexp's peers, not its subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from ._connection import msg_payload
from ._logs import LogLimiter
from ._send_budgets import SEND_BUDGET, SendBudgets

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._matching import RegexpEntry
    from ._peer import PeerSession

    Entry = RegexpEntry[PeerSession]

__all__ = ["FAN_OUT_CHECK", "FanOutClock", "route_rest"]

logger = logging.getLogger("trivy")

#: MSGs made or refused for one text past which ``route`` looks at the
#: clock, and every as many more.
FAN_OUT_CHECK = 1024


class FanOutClock:
    """When the matches of the present send were first looked at."""

    def __init__(self) -> None:
        self._since = 0.0
        self._log = LogLimiter(logger)

    def check(self, count: int, last_send_ended: float) -> int:
        """``count`` MSGs made: the next check, or -1 if over budget."""
        now = perf_counter()
        if self._since <= last_send_ended:  # (the first look of this send)
            self._since = now
        elif now - self._since > SEND_BUDGET:
            self._log.warning(
                "the subscriptions one text matched took over %g ms: one MSG more a peer",
                SEND_BUDGET * 1000,
            )
            return -1
        return count + FAN_OUT_CHECK


class Routes(Protocol):
    """What :func:`route_rest` needs of the router."""

    budgets: SendBudgets
    too_slow: list[Any]

    def timed_find(self, entry: Entry, find: Callable[[str], Any], text: str) -> Any:
        """A search that may be costly, timed and charged."""
        ...

    def queued(self, session: PeerSession, status: int, size: int) -> bool:
        """A MSG queued with ``status``; whether it was taken."""
        ...


def route_rest(
    entry: Entry,
    candidates: Iterable[Entry],
    text: str,
    only: PeerSession | None,
    wait: bool,
    router: Routes,
    stopped: tuple[PeerSession, int, bytes],
) -> int:
    """The rest of a send stopped at ``entry``: the MSGs queued.

    ``stopped``: the send stopped among ``entry``'s subscribers, after that
    peer's subscription id, with that MSG. Each peer gets one MSG
    more at most: first the peers of ``entry`` that got none of its MSGs
    yet, then the peers of the candidates past it. Its loops are over peers,
    not subscriptions; it walks the candidates left, once.
    """
    # (once a send at most: this send took 40 ms already)
    last, last_id, payload = stopped
    done: set[PeerSession] = set()  # (those of entry served: no second MSG of it)
    for session, sub_id in entry.subscribers:  # (cheap against the MSGs they cost)
        done.add(session)
        if session is last and sub_id == last_id:
            break
    served: set[PeerSession] = set()
    count = _one_more_each(entry, payload, done, served, only, wait, router)
    entries = iter(candidates)
    for after in entries:
        if after is entry:
            break
    budgets, length = router.budgets, len(text)
    for entry in entries:
        # (inline, not any() over a generator: one text may have 150,000 candidates)
        if only is not None:
            if only in served:
                break
            if only not in entry.peers or only.closing:
                continue
        else:
            for session in entry.peers:
                if session not in served and not session.closing:
                    break
            else:
                continue  # (nobody left to serve: not even searched)
        if budgets.spent and budgets.skips(entry, length):
            continue
        try:
            found = router.timed_find(entry, entry.find, text)
        except TimeoutError:
            router.too_slow.append(entry)
            continue
        if found is not None:
            payload = msg_payload(found.groups(""))
            count += _one_more_each(entry, payload, served, served, only, wait, router)
    return count


def _one_more_each(
    entry: Entry,
    payload: bytes,
    skipped: set[PeerSession],
    served: set[PeerSession],
    only: PeerSession | None,
    wait: bool,
    router: Routes,
) -> int:
    """One MSG of ``entry`` to each of its peers not in ``skipped``; the MSGs queued."""
    count = 0
    for session, ids in entry.peers.items():
        if session in skipped or session in served or session.closing:
            continue
        if only is not None and session is not only:
            continue
        served.add(session)
        try:
            status = session.queue_msg(next(iter(ids)), payload, wait)
        except ValueError:  # (over the line limit: the others still get theirs)
            continue
        count += router.queued(session, status, len(payload))
    return count

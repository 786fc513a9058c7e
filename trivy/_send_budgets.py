"""What the peers' costly regexps may cost one send: per peer, and all together.

The cost bound of a regexp (``_regexp_cost``) lets ``re`` search a text
without a clock when the search is cheap. Searches that may be costly are
timed, and their time charged to the regexp's subscribers, by the router:
:class:`SendBudgets` keeps the account of one send. A peer's regexps may
take :data:`PEER_SEND_BUDGET` of a send, all the peers' together
:data:`SEND_BUDGET`; past either, the costly regexps concerned are skipped
for that send, and the peers over their part get a strike; at the third,
they are disconnected.

A peer's cheap regexps add up too (10,000 of them each within the bound
of a search: 220 ms for a text of 1,000 characters, untimed): once what
the bound gives for all of one peer's regexps on a text reaches
:data:`TIMED_PEER_STEPS`, or for all the peers' regexps
:data:`TIMED_ALL_STEPS`, every search of that send is timed
(:attr:`SendBudgets.timed_above`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._logs import LogLimiter

if TYPE_CHECKING:
    from ._matching import RegexpEntry
    from ._peer import PeerSession

    Subscriber = PeerSession
    Costly = RegexpEntry[PeerSession]

__all__ = [
    "ALWAYS_SEARCHED",
    "LIGHT_PEER_STEPS",
    "MAX_BUDGET_STRIKES",
    "PEER_SEND_BUDGET",
    "SEND_BUDGET",
    "STRIKE_SHARE",
    "TIMED_ALL_STEPS",
    "TIMED_PEER_STEPS",
    "SendBudgets",
]

logger = logging.getLogger("trivy")

#: Seconds one send may spend on one peer's costly regexps (the backstop of
#: the cost bound, measured): past it, its other costly regexps are skipped
#: for this send; at the MAX_BUDGET_STRIKES-th send over it, the peer is
#: disconnected.
PEER_SEND_BUDGET = 0.02
MAX_BUDGET_STRIKES = 3
#: Seconds one send may spend on the costly regexps of all the peers
#: together: past it, the rest are skipped for this send, and the peers
#: that spent over STRIKE_SHARE of it get a strike as over their own budget
#: (300 peers, each within its own 20 ms, held a send 3.2 s).
SEND_BUDGET = 2 * PEER_SEND_BUDGET
STRIKE_SHARE = PEER_SEND_BUDGET / 4
#: Steps of a regexp's cost bound on a text under which it is searched even
#: past SEND_BUDGET (a few us: an anchored regexp on any usual text), so
#: that peers costly together do not starve another's ``^name (.*)``.
ALWAYS_SEARCHED = 100
#: ...and so is a regexp (that needs no guard) of a peer whose regexps all
#: together are within this bound on the text (a few of them: 1,000 such
#: peers cost 10 to 40 ms): 100 peers of 400 `^h.*\w\W<c>` made a
#: newcomer's `^hello (.*)` miss every text of 99 characters or more.
LIGHT_PEER_STEPS = 10_000
#: Steps of the cost bound of all one peer's regexps on a text past which
#: every search of the send is timed (1 to 4 ms of searches).
TIMED_PEER_STEPS = 1_000_000
#: ...and of all the peers' regexps together (10 to 40 ms): 1,000 peers,
#: each just under TIMED_PEER_STEPS, would hold a send seconds untimed.
TIMED_ALL_STEPS = 10 * TIMED_PEER_STEPS


class SendBudgets:
    """The account of the costly searches of one send (see the module docstring)."""

    def __init__(self) -> None:
        #: Seconds of timed searches this send, by peer (falsy: none yet).
        self.spent: dict[Subscriber, float] = {}
        self._spent_in_all = 0.0
        self._over: set[Subscriber] = set()
        self._strikes: dict[Subscriber, int] = {}
        #: Each peer's cost bound, in steps a character of text.
        self._steps: dict[Subscriber, float] = {}
        #: Texts longer than this have every search timed (-1: to be recomputed).
        self.timed_above = -1
        self._log = LogLimiter(logger)

    # ------------------------------------------------------------ the peers
    def set_steps(self, session: Subscriber, steps_per_char: float) -> None:
        """What all of a peer's regexps cost a character of text, now."""
        self._steps[session] = steps_per_char
        self.timed_above = -1  # (recomputed at the next send)

    def steps(self, session: Subscriber) -> float:
        """What all of a peer's regexps cost a character of text."""
        return self._steps.get(session, 0.0)

    def forget(self, session: Subscriber) -> None:
        """The peer left."""
        self._steps.pop(session, None)
        self._strikes.pop(session, None)
        self.timed_above = -1

    # ------------------------------------------------------------ one send
    def update_timed_above(self) -> int:
        """Recompute :attr:`timed_above` (see the module docstring)."""
        steps = self._steps.values()
        most, total = max(steps, default=0.0), sum(steps)
        self.timed_above = (
            int(min(TIMED_PEER_STEPS / most, TIMED_ALL_STEPS / total)) if most > 0 else 1 << 62
        )
        return self.timed_above

    def charge(self, entry: Costly, seconds: float) -> None:
        """A timed search: its time is charged to each subscriber of the regexp."""
        spent = self.spent
        for session in entry.peers:
            if session.closing:
                continue  # (forgotten, its subscriptions not swept yet: no strike kept)
            total = spent[session] = spent.get(session, 0.0) + seconds
            if total > PEER_SEND_BUDGET and session not in self._over:
                self._over.add(session)
        before, self._spent_in_all = self._spent_in_all, self._spent_in_all + seconds
        if before <= SEND_BUDGET < self._spent_in_all:  # all the peers' together
            self._over.update(s for s, total in spent.items() if total > STRIKE_SHARE)
            self._log.warning(
                "the peers' costly regexps took over %g ms of one send; the rest were skipped",
                SEND_BUDGET * 1000,
            )

    def skips(self, entry: Costly, length: int) -> bool:
        """Whether the costly ``entry`` is skipped for the rest of this send (of ``length``)."""
        if (
            self._spent_in_all > SEND_BUDGET
            and entry.steps_per_char * length >= ALWAYS_SEARCHED
            and (entry.guarded or not self._light_subscriber(entry, length))
        ):
            return True
        over = self._over
        return bool(over) and all(s in over or s.closing for s in entry.peers)

    def _light_subscriber(self, entry: Costly, length: int) -> bool:
        """Whether a peer of ``entry`` is light: all its regexps within LIGHT_PEER_STEPS."""
        limit, steps, over = LIGHT_PEER_STEPS / length, self._steps, self._over
        return any(
            not s.closing and s not in over and steps.get(s, 0.0) <= limit for s in entry.peers
        )

    def end_of_send(self) -> None:
        """After a send: the peers over their budget get a strike (the third: out)."""
        for session in self._over:
            spent = self.spent[session] * 1000
            strikes = self._strikes[session] = self._strikes.get(session, 0) + 1
            session.log.warning(
                "%s: its regexps took %.0f ms of one send; the rest were skipped",
                session.peer,
                spent,
            )
            if strikes >= MAX_BUDGET_STRIKES:
                session.log.warning("%s: its regexps are too slow, disconnecting", session.peer)
                session.abort(f"its regexps took over {PEER_SEND_BUDGET * 1000:g} ms of sends")
        self.spent.clear()
        self._spent_in_all = 0.0
        self._over.clear()

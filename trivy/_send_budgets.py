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
    "LIGHT_SEND_STEPS",
    "MAX_BUDGET_STRIKES",
    "MAX_PEER_FIXED_STEPS",
    "MAX_PEER_STEPS_PER_CHAR",
    "PEER_SEND_BUDGET",
    "SEND_BUDGET",
    "STRIKE_SHARE",
    "TIMED_ALL_STEPS",
    "TIMED_PEER_STEPS",
    "SendBudgets",
]

logger = logging.getLogger("trivy")

#: What one peer's regexps may cost together, in steps of the cost bound a
#: character of a text (``_regexp_cost``): every send runs them, so they
#: share this budget (those that need the guard are bounded by it instead).
#: 10,000 unanchored literals take about 25,000; a send of 100 characters
#: costs one peer 20 M steps at most (20-80 ms).
MAX_PEER_STEPS_PER_CHAR = 200_000
#: ...and in steps whatever the text (the bound of a text of one character
#: past its rate a character): 2 to 8 ms a send. 10,000 anchored literals
#: take about 170,000; one ``^(?:){300000}`` 1.8 M (7 ms every send: 113 of
#: them, each within the rate, held a send of two characters 366 ms).
MAX_PEER_FIXED_STEPS = 2_000_000
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
#: Steps of the bound of all the peers' regexps on a text past which a send
#: may take a millisecond or more: the next ``send`` looks at the clock, and
#: yields if the loop's slice is spent (not only every 1,024 calls: 200
#: sends of 1.2 ms held the loop 245 ms, and 30 of 75 ms 2.2 s).
LIGHT_SEND_STEPS = 250_000


class SendBudgets:
    """The account of the costly searches of one send (see the module docstring)."""

    def __init__(self) -> None:
        #: Seconds of timed searches this send, by peer (falsy: none yet).
        self.spent: dict[Subscriber, float] = {}
        self._spent_in_all = 0.0
        self._over: set[Subscriber] = set()
        self._strikes: dict[Subscriber, int] = {}
        #: Each peer's cost bound, in steps a character of text, and whatever
        #: the text.
        self._steps: dict[Subscriber, float] = {}
        self._fixed: dict[Subscriber, float] = {}
        #: Texts longer than this have every search timed (-1: to be recomputed).
        self.timed_above = -1
        #: ...and texts longer than this may cost a send LIGHT_SEND_STEPS or
        #: more (at most timed_above; -1 with it).
        self.light_above = -1
        self._log = LogLimiter(logger)

    # ------------------------------------------------------------ the peers
    def admit(self, session: Subscriber, entry: Costly) -> None:
        """A peer subscribes with ``entry``: add its cost to the peer's, if
        within the peer's budget (one that needs the guard is bounded by it).

        Raises:
          ValueError: over the budget (nothing added).
        """
        if entry.guarded:
            return
        steps = self._steps.get(session, 0.0) + entry.steps_per_char
        fixed = self._fixed.get(session, 0.0) + entry.fixed_steps
        if steps > MAX_PEER_STEPS_PER_CHAR:
            raise ValueError(
                f"this peer's regexps would cost over {MAX_PEER_STEPS_PER_CHAR} steps"
                " a character of every text"
            )
        if fixed > MAX_PEER_FIXED_STEPS:
            raise ValueError(
                f"this peer's regexps would cost over {MAX_PEER_FIXED_STEPS} steps every text"
            )
        self._steps[session], self._fixed[session] = steps, fixed
        self.timed_above = self.light_above = -1  # (recomputed at the next send)

    def release(self, session: Subscriber, entry: Costly) -> None:
        """A peer unsubscribes from ``entry`` (admitted before)."""
        if not entry.guarded:
            self._steps[session] = self._steps.get(session, 0.0) - entry.steps_per_char
            self._fixed[session] = self._fixed.get(session, 0.0) - entry.fixed_steps
            self.timed_above = self.light_above = -1

    def steps(self, session: Subscriber) -> float:
        """What all of a peer's regexps cost a character of text."""
        return self._steps.get(session, 0.0)

    def forget(self, session: Subscriber) -> None:
        """The peer left, and its regexps left the table."""
        self._steps.pop(session, None)
        self._fixed.pop(session, None)
        self._strikes.pop(session, None)
        self.timed_above = self.light_above = -1

    # ------------------------------------------------------------ one send
    def update_timed_above(self) -> int:
        """Recompute :attr:`timed_above` and :attr:`light_above` (see the
        module docstring); returns the latter."""
        fixed = self._fixed
        all_fixed, all_steps = sum(fixed.values()), sum(self._steps.values())
        longest = _within(TIMED_ALL_STEPS, all_fixed, all_steps)
        for session, steps in self._steps.items():
            longest = min(longest, _within(TIMED_PEER_STEPS, fixed.get(session, 0.0), steps))
        self.timed_above = longest
        self.light_above = min(longest, _within(LIGHT_SEND_STEPS, all_fixed, all_steps))
        return self.light_above

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
            and entry.fixed_steps + entry.steps_per_char * length >= ALWAYS_SEARCHED
            and (entry.guarded or not self._light_subscriber(entry, length))
        ):
            return True
        over = self._over  # (a closing peer's regexps may wait for the sweep: none searched)
        return all(s in over or s.closing for s in entry.peers)

    def _light_subscriber(self, entry: Costly, length: int) -> bool:
        """Whether a peer of ``entry`` is light: all its regexps within LIGHT_PEER_STEPS."""
        steps, fixed, over = self._steps, self._fixed, self._over
        return any(
            not s.closing
            and s not in over
            and fixed.get(s, 0.0) + steps.get(s, 0.0) * length <= LIGHT_PEER_STEPS
            for s in entry.peers
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


def _within(bound: float, fixed: float, per_char: float) -> int:
    """The longest text whose cost ``fixed + per_char * length`` is under
    ``bound`` (0: none, as a text sent is never empty; 2**62: any)."""
    if fixed >= bound:
        return 0
    return int((bound - fixed) / per_char) if per_char > 0 else 1 << 62

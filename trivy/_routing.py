"""Our texts to the peers: matching against their regexps, and the overflow policy.

The :class:`Router` keeps every regexp the peers subscribed with
(:class:`~trivy._matching.RegexpTable`), finds which ones a text matches,
and has each matching subscriber's connection queue one MSG
(:meth:`~trivy._connection.Connection.send_msg_payload`, which says whether
the peer had room): one payload per matching regexp
(:func:`~trivy._connection.msg_payload`), shared by all its subscribers.
A peer whose output is over its limit either makes ``send`` wait
(lossless, unless the peer is excused: see ``_patience``) or, for
``send_nowait``, gets the overflow policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

import trio

# (per message: trio.X would stay a generic load: trio has a module __getattr__)
from trio.lowlevel import checkpoint_if_cancelled

from . import protocol
from ._connection import MAX_LINE_LENGTH, REFUSED, msg_payload
from ._events import BusEvent, Congestion, SubscriptionRemoved
from ._fairness import SERVE_SLICE, shared_slice
from ._fan_out import FAN_OUT_CHECK, FanOutClock, route_rest
from ._logs import LogLimiter, shorten
from ._matching import NoMoreGuarded, RegexpEntry, RegexpTable
from ._message_classes import MessageClasses
from ._options import BusOptions
from ._output import SendPace
from ._peer import PeerSession
from ._peer_regexps import SUBSCRIPTION_FLOOR
from ._regexp_guard import MATCH_TIMEOUT
from ._send_budgets import SendBudgets

__all__ = ["CANCEL_CHECK_EVERY", "MAX_TEXT", "SENDS_PER_CHECKPOINT", "Router"]

logger = logging.getLogger("trivy")

#: ``await send()`` yields to the scheduler once per this many calls (or
#: when a peer's buffer is over its limit): yielding on every call would
#: flush one message per write and forfeit coalescing. 1024 sends take about
#: 1 ms, within trio's advice to checkpoint every few milliseconds; 256 cost
#: about 7 % of the 1→1 throughput in scheduler passes. A multiple of
#: CANCEL_CHECK_EVERY: the yield takes the place of one of its checks.
SENDS_PER_CHECKPOINT = 1024
#: Between two checkpoints, every this many sends one checks for
#: cancellation (``trio.lowlevel.checkpoint_if_cancelled``), and so does the
#: first send after one. Checking on every call cost 13-21 % of the 1→1
#: throughput; the cancellations it would see earlier are only those the
#: sending task makes itself (a deadline, or another task's cancel, reaches
#: a task only when it yields).
CANCEL_CHECK_EVERY = 16
_CHECKS_PER_YIELD = SENDS_PER_CHECKPOINT // CANCEL_CHECK_EVERY
#: Longest text ``send`` takes, in UTF-8 bytes: its MSG line (head, text,
#: ETX) must stay within what a peer with default limits accepts, or that
#: peer would answer ERROR and hang up.
MAX_TEXT = MAX_LINE_LENGTH - 24
#: Texts up to this many characters cannot exceed MAX_TEXT bytes (4 bytes a
#: character at most): only longer ones are measured.
_SURELY_SHORT = MAX_TEXT // 4
#: ...and a MSG payload: the text's groups, their ETXs and the newline.
_MAX_PAYLOAD = MAX_TEXT + 2
#: A text this long or shorter needs no length check: its MSG payload is at
#: most (groups × 4 bytes × SHORT_TEXT), within the limit below 256 groups.
SHORT_TEXT = 1024
#: Regexps one peer may hold that need the guard (some texts matched by the
#: timed engine): each may cost a send up to MATCH_TIMEOUT, once.
MAX_GUARDED_PER_PEER = 8
MAX_GUARD_STRIKES = 3  # a peer whose regexps ran out of time this often is disconnected
_TIMED = 1 << 62  # route's length of a text all of whose searches are timed
#: Subscriptions of a peer that leaves removed at once; more are left to
#: :meth:`Router.sweep`, a slice at a time (10,000 took 11 ms, and 48 peers
#: leaving together held the loop 466 ms).
FORGET_AT_ONCE = 256


class Router:
    """Routes our texts to the peers' subscriptions.

    Args:
      options: the limit, overflow policy and newline handling.
      report: called with a :class:`~trivy.Congestion` event (never waits).
    """

    def __init__(self, options: BusOptions, report: Callable[[BusEvent], None]) -> None:
        self.table: RegexpTable[PeerSession] = RegexpTable(
            options.match_mode, options.max_regexp_characters
        )
        #: Our message classes: peers' regexps outside them are not used.
        self.classes = MessageClasses(options.message_classes)
        #: When each send ended: the peers' outputs tell a burst by it.
        self.pace = SendPace(options.stall_timeout)
        self._overflow_disconnects = options.overflow == "disconnect"
        # Per peer: its regexps that need the guard, and how many ran out of time.
        self._guarded: dict[PeerSession, int] = {}
        self._guard_strikes: dict[PeerSession, int] = {}
        #: What the peers' regexps cost each send: their cost bounds, the time
        #: their costly ones took, their strikes.
        self.budgets = SendBudgets()
        self._max_subscriptions = options.max_subscriptions
        self._java_newlines = options.java_newlines
        self._report = report
        self._log = LogLimiter(logger)
        #: The regexps that ran out of time during a send (disabled after it).
        self.too_slow: list[RegexpEntry[PeerSession]] = []
        self._to_abort: list[PeerSession] = []
        # (peers gone whose subscriptions are still in the table: see sweep)
        self._to_forget: dict[PeerSession, list[tuple[int, str]]] = {}
        self._swept = trio.lowlevel.ParkingLot()
        self._fan_out = FanOutClock()
        #: Peers that went over their limit during a waiting send.
        self.congested: list[PeerSession] = []
        #: Calls of ``send`` before the next that awaits :meth:`cancel_point`
        #: (0: the next does, as after a send that may have taken long).
        self.sends_until_check = 0
        self._checks_until_yield = 0
        self._yielded_at = 0.0  # (perf_counter) when send last yielded

    async def cancel_point(self) -> None:
        """``send``'s cancel point, once per CANCEL_CHECK_EVERY calls.

        It checks for cancellation, and yields to the scheduler once per
        SENDS_PER_CHECKPOINT calls, or once the sends since it last did have
        taken the loop's slice (SERVE_SLICE), whatever they cost. A call that
        raises ``Cancelled`` leaves the next call to check again.
        """
        if self._checks_until_yield and perf_counter() - self._yielded_at <= SERVE_SLICE:
            await checkpoint_if_cancelled()
            self._checks_until_yield -= 1
        else:
            await trio.lowlevel.checkpoint()  # let the other tasks run
            self._checks_until_yield = _CHECKS_PER_YIELD - 1
            self._yielded_at = perf_counter()
        self.sends_until_check = CANCEL_CHECK_EVERY - 1

    # -------------------------------------------------- peers' subscriptions
    def add(self, session: PeerSession, sub_id: int, regexp: str) -> None:
        """A peer subscribed: compile (once per regexp) and index its regexp.

        Raises:
          re.error, ValueError...: the regexp is refused (not compiled, not
            safe, or one guarded regexp too many for this peer).
        """
        if session.closing:
            return  # (its last lines, read before it closed: nothing goes to it now)
        if not self.classes.admits(regexp):
            logger.debug("%s: %r fits none of our message classes: not used", session.peer, regexp)
            return
        if (
            self.table.subscriptions >= self._max_subscriptions
            and len(session.peer.subscriptions) > SUBSCRIPTION_FLOOR  # (this one included)
        ):
            raise ValueError(
                f"the peers hold {self._max_subscriptions} subscriptions in all;"
                f" past that, {SUBSCRIPTION_FLOOR} a peer"
            )
        guarded = self._guarded.get(session, 0)
        too_many = f"more than {MAX_GUARDED_PER_PEER} regexps that need the guard"
        try:  # (a peer at its cap: refused before anything compiles it)
            entry = self.table.add(
                session, sub_id, regexp, may_guard=guarded < MAX_GUARDED_PER_PEER
            )
        except NoMoreGuarded:
            raise ValueError(too_many) from None
        if entry.guarded and guarded >= MAX_GUARDED_PER_PEER:  # (an entry another peer made)
            self.table.remove(session, sub_id, regexp)
            raise ValueError(too_many)
        try:
            self.budgets.admit(session, entry)
        except ValueError:
            self.table.remove(session, sub_id, regexp)
            raise
        if entry.guarded:
            self._guarded[session] = guarded + 1

    def remove(self, session: PeerSession, sub_id: int, regexp: str) -> None:
        """A peer unsubscribed."""
        entry = self.table.entry(regexp)
        if entry is not None and (session, sub_id) in entry.subscribers:
            self.budgets.release(session, entry)
            if entry.guarded:
                self._guarded[session] -= 1
        self.table.remove(session, sub_id, regexp)

    def forget(self, session: PeerSession) -> None:
        """A peer is closing: drop all its subscriptions (once it is closing).

        Nothing is routed to a closing peer; past FORGET_AT_ONCE, its
        subscriptions leave the table in :meth:`sweep`'s slices.
        """
        subscriptions = list(session.peer.subscriptions.items())
        if len(subscriptions) > FORGET_AT_ONCE:
            self._to_forget[session] = subscriptions
            self._swept.unpark()
        else:
            for sub_id, regexp in subscriptions:
                self.table.remove(session, sub_id, regexp)
            self.budgets.forget(session)  # (else once swept: its regexps are still timed)
        self._guarded.pop(session, None)
        self._guard_strikes.pop(session, None)

    async def sweep(self) -> None:
        """Remove the subscriptions :meth:`forget` left, fair by time (a task of the bus)."""
        share = shared_slice()
        while True:
            if not self._to_forget:
                waited_at = share.pause()
                await self._swept.park()
                await share.resumed(waited_at)
                continue
            session, subscriptions = next(iter(self._to_forget.items()))
            while subscriptions:
                for sub_id, regexp in subscriptions[-FORGET_AT_ONCE:]:
                    self.table.remove(session, sub_id, regexp)
                del subscriptions[-FORGET_AT_ONCE:]
                if share.over():
                    await share.yield_turn()
            del self._to_forget[session]
            self.budgets.forget(session)

    # --------------------------------------------------------------- sending
    def route(self, text: str, only: PeerSession | None, wait: bool) -> int:
        """Queue ``text`` as MSGs to every matching subscription; count them.

        With ``wait``, over-limit peers are written to anyway and collected
        for :meth:`send` to wait on; otherwise the overflow policy applies.

        Raises:
          ValueError: the text contains a newline (and ``java_newlines`` is off).
        """
        try:  # (free unless raised: bytes, say, where a str is due)
            if "\n" in text:
                if not self._java_newlines:
                    raise ValueError(f"an Ivy message cannot contain a newline: {text!r}")
                text = text.replace("\n", protocol.JAVA_NEWLINE_ESCAPE)
        except TypeError:
            raise TypeError(f"an Ivy text is a str, not {type(text).__name__}") from None
        length = len(text)
        if not length:
            return 0  # ivy-c sends nothing for an empty text
        # (each comparison where it is tested: CPython 3.11 specializes only
        # a comparison that a jump follows, not one whose result is kept)
        if length > _SURELY_SHORT and len(text.encode("utf-8", "surrogateescape")) > MAX_TEXT:
            raise ValueError(f"a text over {MAX_TEXT} bytes: peers would refuse its MSG line")
        count = 0
        table = self.table
        single = table.single_length
        candidates = (
            table.single_bucket.get(text[:single], ()) if single else table.candidates(text)
        )
        too_slow = None
        budgets = self.budgets
        light_above = budgets.light_above
        if light_above < 0:  # (the peers' cost bounds changed)
            light_above = budgets.update_timed_above()
        untimed_length = length
        if length > light_above:  # a send that may take long: the next looks at the clock
            self.sends_until_check = 0
            if length > budgets.timed_above:  # every search of this send is timed
                untimed_length = _TIMED
        check_at, clock = FAN_OUT_CHECK, self._fan_out
        for entry in candidates:
            find = entry.find  # (an attribute called as a method is not specialized)
            try:  # (free unless raised: the guard of a regexp that may backtrack)
                if untimed_length <= entry.costly_above:  # cheap regexps, usual texts: no clock
                    found = find(text)
                elif budgets.skips(entry, length):  # (over a budget, or its peers gone)
                    continue
                else:
                    found = self.timed_find(entry, find, text)
            except TimeoutError:
                found = None
                too_slow = entry
                self.too_slow.append(entry)
            if found is None:
                continue
            payload = msg_payload(found.groups(""))  # a group that took no part: ""
            # Groups that overlap can outgrow the text; not for a short text,
            # unless the regexp has hundreds of groups (see _matching).
            if length > SHORT_TEXT and len(payload) > _MAX_PAYLOAD:
                self._log.warning(
                    "a MSG of %d bytes for %r not sent: over the line limit",
                    len(payload),
                    shorten(entry.regexp),
                )
                continue
            for session, sub_id in entry.subscribers:
                if (only is not None and session is not only) or session.closing:
                    continue  # (a closing peer's subscriptions may wait for sweep)
                queue = session.queue_msg  # (as find above)
                try:
                    status = queue(sub_id, payload, wait)
                except ValueError as exc:  # (one peer's line: the others still get theirs)
                    self._log.warning("%s: MSG not sent: %s", session.peer, exc)
                    continue
                # (what Router.queued does, inline: this runs once per MSG)
                if status:  # (QUEUED is 0: one test in the common case)
                    if status == REFUSED:
                        self._overflow(session, len(payload) + 8)
                        check_at -= 1  # (a MSG refused counts for the clock...)
                        count -= 1  # (...but is not sent)
                    elif session not in self.congested:  # QUEUED_OVER_LIMIT
                        self.congested.append(session)
                count += 1
                # (rare: thousands of MSGs a text; checked within a regexp's too)
                if count >= check_at:  # (a costly send: the next looks at the clock)
                    self.sends_until_check = 0
                    if (check_at := clock.check(count, self.pace.ended)) < 0:
                        break
            else:
                continue
            # over the budget: one MSG more a peer, at most
            stopped = (session, sub_id, payload)
            count += route_rest(entry, candidates, text, only, wait, self, stopped)
            too_slow = self.too_slow[-1] if self.too_slow else too_slow
            break
        self.pace.ended = perf_counter()  # (the peers' outputs tell a burst by it)
        if budgets.spent:
            budgets.end_of_send()
            self.sends_until_check = 0  # (timed searches: the next looks at the clock)
        if too_slow is not None:
            self._disable_too_slow()
        if self._to_abort:
            self.abort_overflowed()
        return count

    def abort_overflowed(self) -> None:
        """Disconnect the peers that went over their limit (overflow policy "disconnect")."""
        sessions, self._to_abort = self._to_abort, []
        for session in sessions:
            session.abort("output buffer full (overflow policy: disconnect)")

    def refused(self, session: PeerSession, size: int) -> bool:
        """A message of ``size`` bytes no sender waits for was refused: the overflow policy."""
        self._overflow(session, size)
        self.abort_overflowed()
        return False

    def queued(self, session: PeerSession, status: int, size: int) -> bool:
        """A MSG of ``size`` bytes was queued with ``status``; whether it was taken."""
        if status == REFUSED:
            self._overflow(session, size + 8)
            return False
        if status and session not in self.congested:  # QUEUED_OVER_LIMIT
            self.congested.append(session)
        return True

    def timed_find(
        self, entry: RegexpEntry[PeerSession], find: Callable[[str], Any], text: str
    ) -> Any:
        """A search that may be costly: its time, even when it runs out, is charged."""
        started = perf_counter()
        try:
            return find(text)
        finally:
            self.budgets.charge(entry, perf_counter() - started)

    def _disable_too_slow(self) -> None:
        """Drop the regexps that ran out of time; their peers get an ERROR."""
        entries, self.too_slow = self.too_slow, []
        reason = f"regexp too slow to match (over {MATCH_TIMEOUT * 1000:g} ms): disabled"
        for entry in entries:
            for session, sub_id in list(entry.subscribers):
                self.table.remove(session, sub_id, entry.regexp)  # its guard slot stays used
                if session.closing:
                    continue  # (forgotten: no strike kept for it)
                session.reject_regexp(sub_id, entry.regexp, reason)
                session.log.warning("%s: %r %s", session.peer, shorten(entry.regexp), reason)
                self._report(SubscriptionRemoved(session.peer, sub_id, entry.regexp))
                strikes = self._guard_strikes[session] = self._guard_strikes.get(session, 0) + 1
                if strikes == MAX_GUARD_STRIKES:
                    session.log.warning("%s: too many slow regexps, disconnecting", session.peer)
                    session.abort()

    def _overflow(self, session: PeerSession, size: int) -> None:
        output = session.output
        if not output.record_drop(size):
            return  # reported once per episode: until its buffer empties
        if self._overflow_disconnects:
            session.log.warning("%s: output buffer full, disconnecting", session.peer)
            self._to_abort.append(session)  # after the route: aborting edits the table
        else:
            session.log.warning("%s: output buffer full, dropping messages", session.peer)
        self._report(Congestion(session.peer, output.size, output.dropped_bytes))

    async def wait_for_room(self) -> None:
        """Wait until every peer that went over its limit is back under it (or gone).

        ``send`` calls it only when :attr:`congested`, after routing: its text
        is queued then, lossless, even if the wait is cancelled.
        """
        congested, self.congested = self.congested, []
        for session in congested:
            await session.output.wait_for_room()

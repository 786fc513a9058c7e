"""What a peer's events mean to our agent: matches, callbacks, bus events, DIE.

The :class:`Dispatcher` is the :class:`~trivy._peer.SessionHandler` of every
session. It delivers MSGs to our subscriptions and bindings (the hot path:
a channel append, or an inline callback), keeps the router's table in step
with the peers' subscriptions, resolves duplicates, and turns the rest into
:mod:`bus events <trivy._events>`. Replies to the peer were already queued
by the protocol layer; here they are logged, and only what the protocol
layer cannot know (a duplicate, the ready message) is sent from here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from ._callbacks import call_logged, call_user
from ._channels import BIG_ITEM, Subscription
from ._event_streams import EventHub
from ._events import (
    MATCH_MAKERS,
    DieReceived,
    DirectMessage,
    ErrorReceived,
    Match,
    Peer,
    PeerConnected,
    PeerDisconnected,
    PeerResponsive,
    PeerUnresponsive,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
    new_match,
)
from ._fairness import SERVE_SLICE, shared_slice
from ._local import Binding, LocalSubscriptions
from ._logs import shorten
from ._peer import PeerSession
from ._peer_regexps import REGEXP_ERRORS, regexp_error
from ._peers import PeerSet
from ._protocol_events import (
    Bye,
    Closing,
    DieRequested,
    DirectReceived,
    Event,
    HandshakeDone,
    Malformed,
    PeerIdentified,
    PingReceived,
    PongReceived,
    RegexpAdded,
    RegexpRejected,
    RegexpRemoved,
    UnknownType,
)
from ._protocol_events import ErrorReceived as ErrorLine
from ._requests import PendingAnswers
from ._routing import Router

__all__ = ["DieCallback", "Dispatcher"]

logger = logging.getLogger("trivy")

#: Events served between two looks at the clock: a few, so that slow sync
#: callbacks cannot hold the loop much past the slice.
_EVENTS_PER_LOOK = 16
#: Characters of a connection's regexps the matcher may refuse (each cost a
#: check, up to tens of ms, and counted in no limit: 600 of 4 Ki took 10.75 s
#: of CPU) before the peer is dropped: the characters one peer may hold.
MAX_REFUSED_CHARACTERS = 1024 * 1024


async def _put_batch(target: Subscription, batch: list[Match]) -> None:
    """Put small matches in a subscription's buffer, waiting for room past its limit."""
    taken = target._put_many(batch)
    for match in batch[taken:] if taken < len(batch) else ():
        await target._put(match)


#: ``on_die(peer, num_id)``, sync or async; returning False refuses to die.
DieCallback = Callable[[Peer, int], "Awaitable[bool | None] | bool | None"]
#: Acts on one event of a session; False ends the connection.
_Handler = Callable[[PeerSession, Any], Awaitable[bool]]


class Dispatcher:
    """Acts on every peer's events (see the module docstring).

    Args:
      local: our subscriptions, where MSGs are delivered.
      peers: the mesh, for readiness and duplicates.
      router: the peers' regexps, kept in step with their subscriptions.
      hub: where bus events go.
      ready_message: routed to each peer when its handshake completes.
      on_die: asked whether to obey a DIE.
      stop: stops the bus (an obeyed DIE).
    """

    def __init__(
        self,
        *,
        local: LocalSubscriptions,
        peers: PeerSet,
        router: Router,
        hub: EventHub,
        ready_message: str | None,
        on_die: DieCallback | None,
        stop: Callable[[], None],
    ) -> None:
        self._local = local.by_id
        self._peers = peers
        self._router = router
        self._hub = hub
        self._ready_message = ready_message
        self._on_die = on_die
        self._stop = stop
        #: Requests of ours waiting for their answer (see ``_requests``).
        self.answers = PendingAnswers()
        self._refused: dict[PeerSession, int] = {}  # characters of regexps refused
        self._handlers: dict[type[Event], _Handler] = {
            RegexpAdded: self._regexp_added,
            RegexpRemoved: self._regexp_removed,
            RegexpRejected: self._regexp_rejected,
            PeerIdentified: self._identified,
            HandshakeDone: self._handshake_done,
            PingReceived: self._ping,
            PongReceived: self._pong,
            DirectReceived: self._direct,
            ErrorLine: self._error,
            DieRequested: self._die_requested,
            Malformed: self._malformed,
            UnknownType: self._unknown,
            Bye: self._bye,
            Closing: self._closing,
        }

    async def dispatch(self, session: PeerSession, events: list[Event]) -> bool:
        """Act on the events of one read; False when the connection must end.

        A session that is closing (we said BYE, or dropped it) is only
        drained: what it still sends means nothing to us.
        """
        if session.closing:
            return True
        local, peer, handlers = self._local, session.peer, self._handlers
        sub_id: int
        groups: tuple[str, ...]
        size: int
        # The matches of consecutive MSGs for one subscription are put in its
        # buffer together, before anything else happens (a handler, a
        # callback, a yield) and every 16 events: as if one by one.
        batch: list[Match] = []
        batch_target: Any = None
        make, set_peer, set_groups, set_subscription_id = MATCH_MAKERS
        # (a count compared, not masked: CPython 3.11 specializes ==, not &)
        served, look_at = 0, _EVENTS_PER_LOOK
        for event in events:
            served += 1
            if served == look_at:
                look_at += _EVENTS_PER_LOOK
                if batch:  # (16 matches at most wait here: none made past a full buffer)
                    await _put_batch(batch_target, batch)
                    batch = []
                share = shared_slice()  # (the slice every reader shares)
                if perf_counter() - share.started > SERVE_SLICE:
                    await share.yield_turn()  # fair by time: sync callbacks included
            if type(event) is not tuple:
                if batch:
                    await _put_batch(batch_target, batch)
                    batch = []
                if not await handlers[type(event)](session, event):
                    return False
                continue
            # a MsgTuple; unpacked with no cast(), which is a call per MSG
            sub_id, groups, size = event  # type: ignore[assignment,misc]
            target = local.get(sub_id)
            if target is None:
                continue  # unsubscribed meanwhile
            if target is batch_target and size <= BIG_ITEM:  # (the usual MSG)
                match = make(Match)  # (new_match, inline: this runs per MSG)
                set_peer(match, peer)
                set_groups(match, groups)
                set_subscription_id(match, sub_id)
                batch.append(match)
                continue
            if batch:
                await _put_batch(batch_target, batch)
                batch = []
            # type() rather than isinstance: Subscription's ABC metaclass
            # makes isinstance a Python-level check, and this runs per MSG.
            if type(target) is Binding:
                pending = call_logged(target.callback, (peer, *groups), target.regexp)
                if pending is not None:
                    await pending
            elif size <= BIG_ITEM:
                batch_target = target
                batch.append(new_match(peer, groups, sub_id))
            else:  # (a big one is counted against the buffer's bytes)
                match = new_match(peer, groups, sub_id)
                if not target._put_nowait(match, size):  # type: ignore[union-attr]
                    await target._put(match, size)  # type: ignore[union-attr]
        if batch:
            await _put_batch(batch_target, batch)
        return True

    def session_closing(self, session: PeerSession) -> None:
        """Route nothing more to the session while it flushes."""
        self._router.forget(session)

    def session_ended(self, session: PeerSession) -> None:
        """Forget the session (its subscriptions went when it closed); report its peer gone."""
        self._refused.pop(session, None)
        if self._peers.remove(session):
            session.log.info("%s disconnected", session.peer)  # (rate-limited: churn)
            self.answers.peer_left(session.peer)
            self._hub.emit_nowait(PeerDisconnected(session.peer, session.end_reason))

    def session_unresponsive(self, session: PeerSession, silent_for: float) -> None:
        """Report the silent peer (the hub's overflow policy applies)."""
        self._hub.emit_nowait(PeerUnresponsive(session.peer, silent_for))

    def session_responsive(self, session: PeerSession) -> None:
        """Report the peer speaking again."""
        self._hub.emit_nowait(PeerResponsive(session.peer))

    # ------------------------------------------- one handler per kind of event
    # Each returns False when the connection must end.

    async def _regexp_added(self, session: PeerSession, event: RegexpAdded) -> bool:
        if event.replaced is not None:
            self._router.remove(session, event.sub_id, event.replaced)
        try:
            self._router.add(session, event.sub_id, event.regexp)  # compiles it
        except REGEXP_ERRORS as exc:  # the matcher's verdict, the protocol's answer
            reason, offset = regexp_error(exc)
            rejected: RegexpRejected | None = session.reject_regexp(
                event.sub_id, event.regexp, reason, offset
            )
            refused = self._refused[session] = self._refused.get(session, 0) + len(event.regexp)
            if refused > MAX_REFUSED_CHARACTERS:
                session.log.warning("%s: regexps of over 1 Mi characters refused", session.peer)
                session.abort(f"over {MAX_REFUSED_CHARACTERS} characters of regexps refused")
                return False
        else:
            rejected = None
        share = shared_slice()
        if share.over():  # many new regexps: the other tasks run between compiles
            await share.yield_turn()
        peer = session.peer
        if rejected is not None:
            return await self._regexp_rejected(session, rejected._replace(replaced=event.replaced))
        if event.replaced is not None:
            await self._hub.emit(
                SubscriptionChanged(peer, event.sub_id, event.regexp, event.replaced)
            )
        else:
            await self._hub.emit(SubscriptionAdded(peer, event.sub_id, event.regexp))
        return True

    async def _regexp_removed(self, session: PeerSession, event: RegexpRemoved) -> bool:
        self._router.remove(session, event.sub_id, event.regexp)
        await self._hub.emit(SubscriptionRemoved(session.peer, event.sub_id, event.regexp))
        return True

    async def _regexp_rejected(self, session: PeerSession, event: RegexpRejected) -> bool:
        peer = session.peer
        regexp, reason = shorten(event.regexp), shorten(event.reason)
        session.log.warning("%s: regexp %r refused: %s", peer, regexp, reason)
        if event.replaced is not None:
            self._router.remove(session, event.sub_id, event.replaced)
            await self._hub.emit(SubscriptionRemoved(peer, event.sub_id, event.replaced))
        return True

    async def _identified(self, session: PeerSession, event: PeerIdentified) -> bool:
        session.identify(event.name, event.port)
        return self._peers.identified(session)

    async def _handshake_done(self, session: PeerSession, event: HandshakeDone) -> bool:
        self._peers.mark_ready(session)
        session.log.info("%s connected", session.peer)
        if self._ready_message:
            self._router.route(self._ready_message, session, False)
        await self._hub.emit(PeerConnected(session.peer))
        return True

    async def _ping(self, session: PeerSession, event: PingReceived) -> bool:
        session.answer_ping(event.num_id)  # after the lines before it: their ERRORs first
        return True

    async def _pong(self, session: PeerSession, event: PongReceived) -> bool:
        if event.expected:
            session.pings.pong(event.num_id)
        else:
            session.log.info(
                "%s sent a PONG for no PING of ours (id %d)", session.peer, event.num_id
            )
        return True

    async def _direct(self, session: PeerSession, event: DirectReceived) -> bool:
        if not self.answers.take(session.peer, event.num_id, event.text):
            await self._hub.emit(DirectMessage(session.peer, event.num_id, event.text))
        return True

    async def _error(self, session: PeerSession, event: ErrorLine) -> bool:
        peer, text = session.peer, shorten(event.text)
        if self.answers.take(peer, event.num_id, event.text, refused=True):
            return True  # a request refused: its caller hears of it
        session.log.warning("%s sent an error (id %d): %s", peer, event.num_id, text)
        await self._hub.emit(ErrorReceived(peer, event.num_id, event.text))
        return True

    async def _die_requested(self, session: PeerSession, event: DieRequested) -> bool:
        await self._die(session, event.num_id)
        return True

    async def _malformed(self, session: PeerSession, event: Malformed) -> bool:
        line = shorten(event.line)
        session.log.warning("%s sent a malformed line (%s): %r", session.peer, event.reply, line)
        return True

    async def _unknown(self, session: PeerSession, event: UnknownType) -> bool:
        kind, params = event.msg_type, shorten(event.params)
        session.log.warning("%s sent a message of unknown type %d: %r", session.peer, kind, params)
        return True

    async def _bye(self, session: PeerSession, event: Bye) -> bool:
        session.log.info("%s said BYE", session.peer)
        session.note_end("BYE")
        return False

    async def _closing(self, session: PeerSession, event: Closing) -> bool:
        session.log.warning("dropping %s: %s", session.peer, event.reason)
        session.note_end(event.reason)
        return False

    async def _die(self, session: PeerSession, num_id: int) -> None:
        peer, refused = session.peer, False
        if self._on_die is not None:
            try:
                refused = await call_user(self._on_die, peer, num_id) is False
            except Exception:
                session.log.exception("on_die callback raised; dying anyway")
        await self._hub.emit(DieReceived(peer, num_id, refused))
        if refused:
            session.log.info("%s asked us to die: refused", peer)  # (rate-limited)
        else:
            session.log.info("%s asked us to die: stopping", peer)
            self._stop()

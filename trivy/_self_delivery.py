"""Our own texts to our own subscriptions: ivy-java's ``sendToSelf``.

With ``send_to_self``, a text we send also reaches our own subscriptions
that match it, as though a peer had sent it: the :class:`~trivy.Match`
carries :attr:`SelfDelivery.peer`, our own :class:`~trivy.Peer`. It is
delivered within the ``send`` call, so our subscriptions see our texts in
the order we sent them, as every peer does. Our regexps are applied the
way we apply peers' (``match_mode``).
"""

from __future__ import annotations

import collections
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from ._callbacks import call_user
from ._events import Match, Peer
from ._local import Binding, LocalSubscriptions
from ._logs import LogLimiter
from ._matching import MatchMode
from .protocol import JAVA_NEWLINE_ESCAPE

if TYPE_CHECKING:
    from ._bus import IvyBus

__all__ = ["SelfDelivery", "install"]

logger = logging.getLogger("trivy")

#: Texts sent to ourselves in one chain (callbacks sending texts that they
#: match themselves) before the rest are dropped: a callback that always
#: answers itself would otherwise loop for ever.
MAX_CHAINED = 10_000

_Find = Callable[[str], "re.Match[str] | None"]


class SelfDelivery:
    """Matches our texts against our own subscriptions and delivers them.

    Args:
      local: our subscriptions.
      match_mode: how our regexps are applied (as peers' are).
    """

    def __init__(
        self, local: LocalSubscriptions, match_mode: MatchMode, java_newlines: bool = False
    ) -> None:
        self._local = local
        self._mode = match_mode
        self._java_newlines = java_newlines
        self._pending: collections.deque[list[tuple[Any, Match]]] = collections.deque()
        self._delivering = False
        self._compiled: dict[str, _Find] = {}
        self._log = LogLimiter(logger)
        #: Who our own deliveries say they come from (set when the bus starts).
        self.peer = Peer(name="", host="127.0.0.1", port=0)

    def start(self, name: str, port: int, agent_id: str) -> None:
        """Name our own peer once the bus has its port and id."""
        self.peer = Peer(
            name=name, host="127.0.0.1", port=port, agent_id=agent_id, subscriptions=_NONE
        )

    def _find(self, regexp: str) -> _Find:
        find = self._compiled.get(regexp)
        if find is None:
            if len(self._compiled) > 4 * len(self._local.by_id) + 64:
                self._compiled.clear()  # regexps we no longer hold
            find = self._compiled[regexp] = getattr(re.compile(regexp), self._mode)
        return find

    def _matches(self, text: str) -> list[tuple[Any, Match]]:
        if not text:
            return []  # an empty text goes nowhere (peers get nothing either)
        subject = text.replace("\n", JAVA_NEWLINE_ESCAPE) if self._java_newlines else text
        found = []
        for sub_id, target in list(self._local.by_id.items()):
            result = self._find(target.regexp)(subject)
            if result is not None:
                groups = result.groups("")
                if self._java_newlines:  # as a peer's MSG would arrive
                    groups = tuple(g.replace(JAVA_NEWLINE_ESCAPE, "\n") for g in groups)
                found.append((target, Match(self.peer, groups, sub_id)))
        return found

    async def deliver(self, text: str) -> int:
        """Deliver ``text`` to our matching subscriptions, waiting for room; count them.

        A text sent by a callback while we deliver (or by another task) is
        queued and delivered after the current one, so every subscription
        sees our texts in the order they were sent.
        """
        found = self._matches(text)
        if found:
            self._pending.append(found)
        if self._delivering or not found:
            return len(found)
        self._delivering = True
        try:
            chained = 0
            while self._pending:
                chained += 1
                if chained > MAX_CHAINED:  # callbacks that keep sending what they match
                    self._log.warning("over %d texts to ourselves in a chain: dropped", MAX_CHAINED)
                    self._pending.clear()
                    break
                for target, match in self._pending.popleft():
                    if type(target) is Binding:
                        try:
                            await call_user(target.callback, match.peer, *match.groups)
                        except Exception:
                            logger.exception(
                                "callback %r for %r raised", target.callback, target.regexp
                            )
                    else:
                        size = sum(map(len, match.groups))
                        if not target._put_nowait(match, size):
                            await target._put(match, size)
        finally:
            self._delivering = False
        return len(found)

    def deliver_nowait(self, text: str, nursery: trio.Nursery) -> int:
        """Deliver without waiting: a full subscription misses it (logged);
        an async callback runs as a task of ``nursery``. Counts the deliveries."""
        found = self._matches(text)
        if self._delivering:  # after what is being delivered, in order
            if found:
                self._pending.append(found)
            return len(found)
        delivered = 0
        for target, match in found:
            if type(target) is Binding:
                delivered += 1
                try:
                    result = target.callback(match.peer, *match.groups)
                except Exception:
                    logger.exception("callback %r for %r raised", target.callback, target.regexp)
                    continue
                if result is not None and inspect.isawaitable(result):
                    nursery.start_soon(self._finish, target, result)
            elif target._put_nowait(match, sum(map(len, match.groups))):
                delivered += 1
            else:
                self._log.warning("our text not delivered to %r: buffer full", target.regexp)
        return delivered

    @staticmethod
    async def _finish(binding: Binding, awaitable: Awaitable[object]) -> None:
        try:
            await awaitable
        except Exception:
            logger.exception("callback %r for %r raised", binding.callback, binding.regexp)


def install(bus: IvyBus) -> SelfDelivery:
    """Have ``bus.send`` and ``bus.send_nowait`` deliver to ``bus``'s own subscriptions.

    The two methods are replaced on this bus only, so that a bus without
    ``send_to_self`` pays nothing for it. A send ``to`` one peer stays
    with that peer.
    """
    delivery = SelfDelivery(bus._local, bus.options.match_mode, bus.options.java_newlines)
    plain_send, plain_send_nowait = bus.send, bus.send_nowait

    async def send(text: str, *, to: Peer | None = None) -> int:
        count = await plain_send(text, to=to)
        if to is None:
            count += await delivery.deliver(text)
        return count

    def send_nowait(text: str, *, to: Peer | None = None) -> int:
        count = plain_send_nowait(text, to=to)
        if to is None and bus._nursery is not None:
            count += delivery.deliver_nowait(text, bus._nursery)
        return count

    send.__doc__, send_nowait.__doc__ = plain_send.__doc__, plain_send_nowait.__doc__
    bus.send = send  # type: ignore[method-assign]
    bus.send_nowait = send_nowait  # type: ignore[method-assign]
    return delivery


_NONE: MappingProxyType[int, str] = MappingProxyType({})

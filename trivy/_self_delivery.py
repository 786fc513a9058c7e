"""Our own texts to our own subscriptions: ivy-java's ``sendToSelf``.

With ``send_to_self``, a text we send also reaches our own subscriptions
that match it, as though a peer had sent it: the :class:`~trivy.Match`
carries :attr:`SelfDelivery.peer`, our own :class:`~trivy.Peer`. The bus
makes a :class:`SelfDelivery` only when asked, so a bus without it pays
nothing. Our regexps are applied the way we apply peers' (``match_mode``).

Order and backpressure, as a peer would give them:

- one task delivers at a time (a :class:`trio.Lock`, which is fair): a
  ``send`` waits for the texts sent before it, and for room in our full
  subscriptions, as it waits for a peer that reads slowly; nothing is
  dropped;
- a text a callback sends while its own text is being delivered is
  delivered after that one (the callback runs in the delivering task,
  which cannot wait for itself): so every subscription sees our texts in
  the order they were sent;
- a callback that keeps answering itself loops like two agents answering
  each other: the ``send`` that started it waits, and the loop yields to
  the other tasks. Callbacks that answer themselves more than once per
  text would queue without end: past :data:`MAX_CHAINED` queued texts,
  their ``send`` raises :class:`~trivy.IvyIllegalStateError` (a task
  cannot wait for itself); nothing queued is lost.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import trio

from ._callbacks import call_logged
from ._errors import IvyIllegalStateError
from ._events import Match, Peer
from ._local import Binding, LocalSubscriptions
from ._logs import LogLimiter
from ._matching import MatchMode
from .protocol import JAVA_NEWLINE_ESCAPE

__all__ = ["MAX_CHAINED", "SelfDelivery"]

logger = logging.getLogger("trivy")

#: Texts our callbacks sent to ourselves that may wait, queued, for the
#: text being delivered; past it, such a send raises.
MAX_CHAINED = 1000
#: Chained texts delivered between two checkpoints of the delivering task.
CHAINED_PER_CHECKPOINT = 64

_Find = Callable[[str], "re.Match[str] | None"]
_Found = list[tuple[Any, Match]]


class SelfDelivery:
    """Matches our texts against our own subscriptions and delivers them.

    Args:
      local: our subscriptions.
      match_mode: how our regexps are applied (as peers' are).
      java_newlines: our texts' newlines travel as ivy-java's escape.
    """

    def __init__(
        self, local: LocalSubscriptions, match_mode: MatchMode, *, java_newlines: bool = False
    ) -> None:
        self._local = local
        self._mode = match_mode
        self._java_newlines = java_newlines
        self._lock = trio.Lock()
        self._holder: trio.lowlevel.Task | None = None  # the task delivering now
        self._chained: collections.deque[_Found] = collections.deque()
        self._compiled: dict[str, _Find] = {}
        self._log = LogLimiter(logger)
        self._nursery: trio.Nursery | None = None
        #: Who our own deliveries say they come from (set when the bus starts).
        self.peer = Peer(name="", host="127.0.0.1", port=0)

    def start(self, name: str, port: int, agent_id: str, nursery: trio.Nursery) -> None:
        """Name our own peer once the bus has its port and id; async callbacks
        of :meth:`deliver_nowait` run as tasks of ``nursery``."""
        self.peer = Peer(
            name=name, host="127.0.0.1", port=port, agent_id=agent_id, subscriptions=_NONE
        )
        self._nursery = nursery

    def _find(self, regexp: str) -> _Find:
        find = self._compiled.get(regexp)
        if find is None:
            if len(self._compiled) > 4 * len(self._local.by_id) + 64:
                self._compiled.clear()  # regexps we no longer hold
            find = self._compiled[regexp] = getattr(re.compile(regexp), self._mode)
        return find

    def _matches(self, text: str) -> _Found:
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

        Raises:
          IvyIllegalStateError: a callback of ours, sending while its own
            text is delivered, finds :data:`MAX_CHAINED` texts queued.
        """
        found = self._matches(text)
        if not found:
            return 0
        if self._holder is trio.lowlevel.current_task():
            # A callback of ours, running inside our own delivery: after it.
            if len(self._chained) >= MAX_CHAINED:
                raise IvyIllegalStateError(
                    f"{MAX_CHAINED} texts to ourselves wait for the one being delivered: "
                    "callbacks that answer themselves more than once?"
                )
            self._chained.append(found)
            return len(found)
        async with self._lock:
            self._holder = trio.lowlevel.current_task()
            # (texts a cancelled delivery left queued were sent before this one)
            self._chained.append(found)
            try:
                delivered = 0
                while self._chained:
                    await self._deliver(self._chained.popleft())
                    delivered += 1
                    if delivered % CHAINED_PER_CHECKPOINT == 0:
                        await trio.lowlevel.checkpoint()
            finally:
                self._holder = None
        return len(found)

    @staticmethod
    async def _deliver(found: _Found) -> None:
        for target, match in found:
            if type(target) is Binding:
                pending = call_logged(target.callback, (match.peer, *match.groups), target.regexp)
                if pending is not None:
                    await pending
            else:
                size = sum(map(len, match.groups))
                if not target._put_nowait(match, size):
                    await target._put(match, size)

    def deliver_nowait(self, text: str) -> int:
        """Deliver without waiting; counts the deliveries.

        While a delivery is under way, the text is queued after it (or, past
        :data:`MAX_CHAINED` queued texts, dropped and logged, as
        ``send_nowait`` drops for a full peer). Otherwise a full subscription
        misses it (logged), and an async callback runs as a task.
        """
        found = self._matches(text)
        if not found:
            return 0
        if self._lock.locked():
            if len(self._chained) >= MAX_CHAINED:
                self._log.warning("our text not delivered to ourselves: %d queued", MAX_CHAINED)
                return 0
            self._chained.append(found)
            return len(found)
        delivered = 0
        for target, match in found:
            if type(target) is Binding:
                delivered += 1
                pending = call_logged(target.callback, (match.peer, *match.groups), target.regexp)
                if pending is not None and self._nursery is not None:
                    self._nursery.start_soon(_awaited, pending)
            elif target._put_nowait(match, sum(map(len, match.groups))):
                delivered += 1
            else:
                self._log.warning("our text not delivered to %r: buffer full", target.regexp)
        return delivered


async def _awaited(pending: Any) -> None:
    await pending


_NONE: MappingProxyType[int, str] = MappingProxyType({})

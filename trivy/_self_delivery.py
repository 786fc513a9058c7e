"""Our own texts to our own subscriptions: ivy-java's ``sendToSelf``.

With ``send_to_self``, a text we send also reaches our own subscriptions
that match it, as though a peer had sent it: the :class:`~trivy.Match`
carries :attr:`SelfDelivery.peer`, our own :class:`~trivy.Peer`. The bus
makes a :class:`SelfDelivery` only when asked, so a bus without it pays
nothing. Our regexps are applied the way we apply peers' (``match_mode``).

It works as a peer would, with a queue and a reader of its own:

- ``send`` queues the text (its matches, found at once) in one FIFO, at the
  moment it routes the text to the peers, so our subscriptions see every
  task's texts in the order the peers see them;
- a task of the bus (:meth:`SelfDelivery.run`) delivers them one by one,
  waiting for room in a full subscription and running bound callbacks, as
  a peer's reader does;
- while :data:`MAX_QUEUED` texts wait, ``send`` waits for room before it
  sends anything (a slow peer makes it wait the same way), and
  ``send_nowait`` drops our copy, logged, as it drops for a full peer.

A callback runs in the delivery task, so its ``send`` cannot wait for that
task: it queues, and raises :class:`~trivy.IvyIllegalStateError` when the
queue is full (callbacks that answer themselves more than once per text
would fill it without end). A callback answering itself once per text loops
like two agents answering each other, the delivery task yielding to the
others after every 2 ms of delivering.
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
from ._events import Match, Peer, new_match
from ._fairness import shared_slice
from ._local import Binding, LocalSubscriptions
from ._logs import LogLimiter
from ._matching import MatchMode
from ._options import BusOptions
from .protocol import JAVA_NEWLINE_ESCAPE

__all__ = ["MAX_QUEUED", "SelfDelivery"]

logger = logging.getLogger("trivy")

#: Texts to ourselves that may wait for the delivery task.
MAX_QUEUED = 1000

_Find = Callable[[str], "re.Match[str] | None"]
_Found = list[tuple[Any, Match]]


class SelfDelivery:
    """Matches our texts against our own subscriptions and delivers them in order.

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
        self._queue: collections.deque[_Found] = collections.deque()
        self._queued = trio.lowlevel.ParkingLot()  # the delivery task waits here
        self._room = trio.lowlevel.ParkingLot()  # senders wait here
        self._task: trio.lowlevel.Task | None = None
        self._compiled: dict[str, _Find] = {}
        self._log = LogLimiter(logger)
        #: Who our own deliveries say they come from (set when the bus starts).
        self.peer = Peer(name="", host="127.0.0.1", port=0)

    @classmethod
    def for_options(cls, local: LocalSubscriptions, options: BusOptions) -> SelfDelivery | None:
        """Ours when ``options.send_to_self``, else None."""
        if not options.send_to_self:
            return None
        return cls(local, options.match_mode, java_newlines=options.java_newlines)

    def start(self, name: str, port: int, agent_id: str, nursery: trio.Nursery) -> None:
        """Name our own peer once the bus has its port and id; start delivering."""
        self.peer = Peer(
            name=name, host="127.0.0.1", port=port, agent_id=agent_id, subscriptions=_NONE
        )
        nursery.start_soon(self.run)

    # --------------------------------------------------------------- senders
    async def wait_for_room(self) -> None:
        """Wait while :data:`MAX_QUEUED` texts wait (not in the delivery task)."""
        if self._task is trio.lowlevel.current_task():
            return  # a callback: it cannot wait for itself (see queue)
        while len(self._queue) >= MAX_QUEUED:
            await self._room.park()

    def matches(self, text: str) -> _Found:
        """Our subscriptions ``text`` will reach, for :meth:`put` (after :meth:`wait_for_room`).

        Raises:
          IvyIllegalStateError: a callback of ours finds the queue full.
        """
        found = self._matches(text)
        if found and len(self._queue) >= MAX_QUEUED:
            raise IvyIllegalStateError(
                f"{MAX_QUEUED} texts to ourselves wait for their delivery: "
                "callbacks that answer themselves more than once?"
            )
        return found

    def put(self, found: _Found) -> None:
        """Queue what :meth:`matches` found (nothing happens for nothing)."""
        if found:
            self._queue.append(found)
            if len(self._queue) == 1:
                self._queued.unpark()

    def queue_nowait(self, text: str) -> int:
        """Queue ``text`` if there is room; count the subscriptions it will reach."""
        found = self._matches(text)
        if not found:
            return 0
        if len(self._queue) >= MAX_QUEUED:
            self._log.warning("our text not delivered to ourselves: %d queued", MAX_QUEUED)
            return 0
        self.put(found)
        return len(found)

    # --------------------------------------------------------- the delivery
    async def run(self) -> None:
        """The delivery task: our texts to our subscriptions, one by one, in order."""
        self._task = trio.lowlevel.current_task()
        share = shared_slice()  # (the loop's time, shared with the peers' readers)
        while True:
            while not self._queue:
                waited_at = share.pause()
                await self._queued.park()
                await share.resumed(waited_at)
            for target, match in self._queue[0]:
                if type(target) is Binding:
                    args = (match.peer, *match.groups)
                    pending = call_logged(target.callback, args, target.regexp)
                    if pending is not None:
                        await pending
                else:
                    size = sum(map(len, match.groups))
                    if not target._put_nowait(match, size):
                        await target._put(match, size)
            self._queue.popleft()
            if len(self._queue) < MAX_QUEUED:
                self._room.unpark()
            if share.over():  # fair by time, sync callbacks too
                await share.yield_turn()

    # --------------------------------------------------------------- matching
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
                found.append((target, new_match(self.peer, groups, sub_id)))
        return found


_NONE: MappingProxyType[int, str] = MappingProxyType({})

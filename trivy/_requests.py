"""Request and reply over direct messages: ``bus.requests``.

A request is a DIRECT_MSG with an id we choose; its answer is the
DIRECT_MSG the same peer sends back with the same id (an ERROR with that
id is a refusal). Any Ivy implementation can answer one, so the other side
need not be trivy. :class:`PendingAnswers` is what the dispatcher consults
for every direct message and ERROR before reporting it: an answer goes to
the request waiting for it, never to the event streams.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from ._errors import IvyIllegalStateError, RequestFailed
from ._event_streams import EventStream
from ._events import DirectMessage, Peer
from ._logs import LogLimiter

__all__ = ["MAX_ABANDONED", "PendingAnswers", "Requests"]

logger = logging.getLogger("trivy")

#: Requests given up (cancelled, timed out) whose late answer is still
#: recognised and dropped, rather than taken for a new direct message.
MAX_ABANDONED = 1024
#: A request's id: random in a wide range, so that two trivy agents asking
#: each other at once do not take each other's requests for answers.
_ID_RANGE = (1 << 30, 1 << 31)
#: An ERROR answering a failed request carries at most this much of it.
_MAX_REASON = 200

Handler = Callable[[Peer, str], "str | Awaitable[str]"]


@attrs.define(eq=False)
class _Slot:
    answered: trio.Event = attrs.field(factory=trio.Event)
    text: str | None = None
    refused: bool = False  # answered with an ERROR


class PendingAnswers:
    """The requests waiting for their answer, by (peer, id)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[Peer, int], _Slot] = {}
        self._abandoned: OrderedDict[tuple[Peer, int], None] = OrderedDict()
        self._next_id = random.randrange(*_ID_RANGE)

    def open(self, peer: Peer) -> tuple[int, _Slot]:
        """A new request to ``peer``: its id, and where its answer will be."""
        num_id = self._next_id
        self._next_id = num_id + 1 if num_id + 1 < _ID_RANGE[1] else _ID_RANGE[0]
        slot = self._waiting[(peer, num_id)] = _Slot()
        return num_id, slot

    def close(self, peer: Peer, num_id: int) -> None:
        """The request is over; unanswered, its late answer will be dropped."""
        slot = self._waiting.pop((peer, num_id), None)
        if slot is not None and not slot.answered.is_set():
            self._abandoned[(peer, num_id)] = None
            if len(self._abandoned) > MAX_ABANDONED:
                self._abandoned.popitem(last=False)

    def take(self, peer: Peer, num_id: int, text: str, *, refused: bool = False) -> bool:
        """Whether a direct message (or an ERROR) is an answer: then it is taken."""
        key = (peer, num_id)
        slot = self._waiting.get(key)
        if slot is not None and not slot.answered.is_set():
            slot.text, slot.refused = text, refused
            slot.answered.set()
            return True
        if key in self._abandoned:
            del self._abandoned[key]
            logger.debug("%s answered request %d too late: dropped", peer, num_id)
            return True
        return False

    def peer_left(self, peer: Peer) -> None:
        """The peer is gone: its requests end unanswered."""
        for (waited, _), slot in list(self._waiting.items()):
            if waited is peer:
                slot.answered.set()
        for key in [key for key in self._abandoned if key[0] is peer]:
            del self._abandoned[key]


class _Bus(Protocol):
    """What requests need of the bus."""

    def peers_named(self, name: str) -> list[Peer]: ...
    def send_direct(self, peer: Peer, num_id: int, text: str) -> bool: ...
    def send_error(self, peer: Peer, num_id: int, text: str) -> bool: ...
    def direct_messages(self) -> EventStream[DirectMessage]: ...


class Requests:
    """Requests to peers and answers to theirs, over direct messages (``bus.requests``).

    Bound a request with ``trio.fail_after``: a frozen peer keeps its
    connection and answers nothing. Answers never reach
    :meth:`~trivy.IvyBus.direct_messages` or :meth:`~trivy.IvyBus.events`.
    """

    def __init__(self, bus: _Bus, pending: PendingAnswers) -> None:
        self._bus = bus
        self._pending = pending
        self._log = LogLimiter(logger)

    def _one_peer(self, peer: Peer | str) -> Peer:
        if isinstance(peer, Peer):
            return peer
        if not isinstance(peer, str):
            raise TypeError(f"peer must be a Peer or an agent name, not {type(peer).__name__}")
        named = self._bus.peers_named(peer)
        if not named:
            raise IvyIllegalStateError(f"no agent named {peer!r} is connected")
        if len(named) > 1:
            raise ValueError(
                f"{len(named)} agents are named {peer!r}: give one of bus.peers_named({peer!r})"
            )
        return named[0]

    async def ask(self, peer: Peer | str, text: str) -> str:
        """Send ``text`` to ``peer`` (a :class:`~trivy.Peer`, or the name of one
        agent) as a request, and return its answer.

        Raises:
          RequestFailed: the peer answered with an ERROR (its text is the
            reason), or left before answering, or its output is so far over
            its limit that the request was dropped (see ``send_direct``).
          IvyIllegalStateError: the peer is not connected (no agent has that
            name), or the bus is not running.
          ValueError: several agents have that name (give a Peer), or the
            text contains a newline.
          TypeError: ``peer`` is neither a Peer nor a str, or ``text`` not a str.
        """
        target = self._one_peer(peer)
        num_id, slot = self._pending.open(target)
        try:
            if not self._bus.send_direct(target, num_id, text):
                raise RequestFailed(target, "not sent: its output is over its limit")
            await slot.answered.wait()
        finally:
            self._pending.close(target, num_id)
        if slot.text is None:
            raise RequestFailed(target, "it left before answering")
        if slot.refused:
            raise RequestFailed(target, slot.text)
        return slot.text

    async def serve(self, handler: Handler) -> None:
        """Answer each request peers send, with what ``handler(peer, text)`` returns.

        ``handler`` may be a function or a coroutine function; requests are
        answered one at a time, in order. One that raises is answered with
        an ERROR carrying the exception's message (logged, boundedly), and
        serving goes on. Runs until cancelled.
        """
        async with self._bus.direct_messages() as requests:
            async for request in requests:
                try:
                    answer = handler(request.peer, request.text)
                    if not isinstance(answer, str):
                        answer = await answer
                    if not isinstance(answer, str):
                        raise TypeError(f"the handler returned {type(answer).__name__}, not str")
                except Exception as exc:
                    self._log.warning("request from %s failed: %r", request.peer, exc)
                    reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON].replace("\n", " ")
                    self._answer(self._bus.send_error, request.peer, request.num_id, reason)
                    continue
                self._answer(self._bus.send_direct, request.peer, request.num_id, answer)

    def _answer(
        self, send: Callable[[Peer, int, str], bool], peer: Peer, num_id: int, text: str
    ) -> None:
        try:
            if not send(peer, num_id, text):
                self._log.warning("answer to %s dropped: its output is over its limit", peer)
        except IvyIllegalStateError:
            self._log.info("%s left before its answer went out", peer)
        except ValueError as exc:  # an answer with a newline, say
            self._log.warning("cannot answer %s: %s", peer, exc)

"""Our own subscriptions: channels and callbacks, and telling the peers about them.

Each subscription has an id peers use in their MSGs. Adding, changing or
removing one sends ADD_REGEXP or DEL_REGEXP to every peer through its
:class:`~trivy._peer.PeerSession`; a new peer gets them all in its
handshake (:meth:`LocalSubscriptions.items`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

import attrs

from . import protocol
from ._callbacks import Callback
from ._channels import Subscription
from ._peer import PeerSession
from ._peer_regexps import MAX_REGEXP_LENGTH
from ._regexp_guard import parse_compilable

__all__ = ["Binding", "LocalSubscriptions"]


@attrs.define(eq=False)
class Binding:
    """A subscription delivered to a callback, ``callback(peer, *groups)``."""

    callback: Callback
    regexp: str


def wire_regexp(regexp: str) -> str:
    """The regexp as peers get it (intervals expanded), checked.

    Raises:
      ValueError: it contains a newline, does not compile, would cost too
        much to compile, or is longer than peers with default limits accept.
    """
    if not isinstance(regexp, str):  # (bind(regexp, callback), arguments swapped...)
        raise TypeError(f"a regexp is a str, not {type(regexp).__name__}: {regexp!r}")
    if "\n" in regexp:
        raise ValueError(f"a regexp cannot contain a newline: {regexp!r}")
    expanded = protocol.expand_intervals(regexp)
    if len(expanded) > MAX_REGEXP_LENGTH:
        size = len(expanded)
        raise ValueError(f"a regexp of {size} characters: peers refuse over {MAX_REGEXP_LENGTH}")
    try:
        # (bounded first: a bridge binds regexps another site chose)
        groups = parse_compilable(expanded).state.groups - 1
        re.compile(expanded)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"bad regexp {regexp!r}: {exc}") from None
    if groups > protocol.MAX_MSG_GROUPS:  # (its MSGs would be refused)
        raise ValueError(
            f"a regexp of {groups} groups: peers send {protocol.MAX_MSG_GROUPS} at most"
        )
    return expanded


class LocalSubscriptions:
    """Our subscriptions by id, announced to the sessions given.

    Args:
      sessions: the peers to tell (iterated on each change).
    """

    def __init__(self, sessions: Iterable[PeerSession]) -> None:
        self._sessions = sessions
        #: id → Subscription or Binding; the reader looks MSG ids up here.
        self.by_id: dict[int, Subscription | Binding] = {}
        self._ids = itertools.count()
        self.accepting = True
        self._handshake: bytes | None = None  # (made once between two changes)

    def items(self) -> list[tuple[int, str]]:
        """``(id, regexp)`` of every subscription."""
        return [(sub_id, local.regexp) for sub_id, local in self.by_id.items()]

    def handshake_lines(self) -> bytes:
        """The ADD_REGEXP line of every subscription, for each new peer's
        handshake: encoded once between two changes, not per connection (a
        flood of connections to an agent of 10,000 subscriptions held the
        loop 80 ms a step)."""
        if self._handshake is None:
            add = protocol.MsgType.ADD_REGEXP
            self._handshake = b"".join(
                protocol.encode(add, sub_id, local.regexp) for sub_id, local in self.by_id.items()
            )
        return self._handshake

    def _announce(self, sub_id: int, regexp: str) -> None:
        self._handshake = None
        for session in self._sessions:
            session.send_subscription(sub_id, regexp)

    def subscribe(self, regexp: str, max_buffer: int, max_bytes: int) -> Subscription:
        """A new channel subscription (see :meth:`trivy.IvyBus.subscribe`)."""
        wire = wire_regexp(regexp)
        sub_id = next(self._ids)
        sub = Subscription(sub_id, wire, max_buffer, lambda: self.remove(sub_id), max_bytes)
        self.by_id[sub_id] = sub
        self._announce(sub_id, wire)
        return sub

    def bind(self, callback: Callback, regexp: str) -> int:
        """A new callback subscription; returns its id."""
        wire = wire_regexp(regexp)
        sub_id = next(self._ids)
        self.by_id[sub_id] = Binding(callback, wire)
        self._announce(sub_id, wire)
        return sub_id

    def change(self, sub_id: int, regexp: str) -> None:
        """Replace the regexp of ``sub_id`` (ADD_REGEXP with the same id).

        Raises:
          KeyError: no subscription has that id.
          ValueError: the regexp contains a newline or does not compile.
        """
        local = self.by_id.get(sub_id)
        if local is None:
            raise KeyError(f"no subscription with id {sub_id}")
        local.regexp = wire_regexp(regexp)
        self._announce(sub_id, local.regexp)

    def unbind(self, sub_id: int) -> str:
        """Remove ``sub_id``; a channel ends (``EndOfChannel`` once drained).

        Raises:
          KeyError: no subscription has that id.
        """
        local = self.by_id.get(sub_id)
        if local is None:
            raise KeyError(f"no subscription with id {sub_id}")
        self.remove(sub_id)
        if isinstance(local, Subscription):
            local._end()
        return local.regexp

    def remove(self, sub_id: int) -> None:
        """Forget ``sub_id`` and tell the peers (unless we are leaving)."""
        self._handshake = None
        if self.by_id.pop(sub_id, None) is not None and self.accepting:
            for session in self._sessions:
                session.send_unsubscription(sub_id)

    def end_all(self) -> None:
        """We are leaving: every channel ends once drained; no DEL_REGEXP goes out."""
        self.accepting = False
        for local in self.by_id.values():
            if isinstance(local, Subscription):
                local._end()

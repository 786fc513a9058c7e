"""What the bus reports: the peers, matched messages and bus events.

All are attrs classes; every event is frozen. ``Peer`` is the one mutable
object: its subscriptions change as the peer sends ADD/DEL_REGEXP.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

__all__ = [
    "BusEvent",
    "Congestion",
    "DieReceived",
    "DirectMessage",
    "ErrorReceived",
    "Match",
    "Peer",
    "PeerConnected",
    "PeerDisconnected",
    "SubscriptionAdded",
    "SubscriptionChanged",
    "SubscriptionRemoved",
]


@attrs.define(eq=False)
class Peer:
    """Another agent on the bus, as seen from ours.

    Attributes:
      name: its agent name (from its START_REGEXP).
      host: the IP address it connects from / listens on.
      port: its TCP listening port.
      agent_id: its bus-unique id, when its UDP announce told us
        (``None`` for peers that connected to us).
      subscriptions: its regexps, by subscription id: a read-only, live
        view of what the peer subscribed with.
    """

    name: str
    host: str
    port: int
    agent_id: str | None = None
    subscriptions: Mapping[int, str] = attrs.field(
        factory=lambda: MappingProxyType({}), repr=False, on_setattr=attrs.setters.frozen
    )

    def __str__(self) -> str:
        # (a name is the peer's to choose: logs quote 64 characters of it)
        name = self.name if len(self.name) <= 64 else self.name[:64] + "…"
        return f"{name}@{self.host}:{self.port}"


@attrs.frozen(slots=True)
class Match:
    """One message that matched one of our subscriptions.

    Attributes:
      peer: who sent it.
      groups: the regexp's capture groups, as text (a group that took no
        part in the match is ``""``).
      subscription_id: the id of our subscription that matched.
    """

    peer: Peer
    groups: tuple[str, ...]
    subscription_id: int


_new_object = object.__new__
# (the slots' member descriptors, read from the class: not typed as such)
_set_peer = vars(Match)["peer"].__set__
_set_groups = vars(Match)["groups"].__set__
_set_subscription_id = vars(Match)["subscription_id"].__set__


#: What :func:`new_match` calls, for a loop that makes matches inline.
MATCH_MAKERS = (_new_object, _set_peer, _set_groups, _set_subscription_id)


def new_match(peer: Peer, groups: tuple[str, ...], subscription_id: int) -> Match:
    """``Match(peer, groups, subscription_id)``, made a third faster: the same frozen object.

    The slots' own setters rather than attrs' frozen ``__init__`` (which
    goes through ``object.__setattr__`` per field): one is made per
    message a subscription receives.
    """
    match: Match = _new_object(Match)
    _set_peer(match, peer)
    _set_groups(match, groups)
    _set_subscription_id(match, subscription_id)
    return match


@attrs.frozen
class PeerConnected:
    """A peer finished its handshake: it is ready."""

    peer: Peer


@attrs.frozen
class PeerDisconnected:
    """A ready peer left the bus (BYE, closed connection, or dropped by us).

    ``reason`` says why, when we know: ``"BYE"``, ``"connection lost: ..."``,
    or the limit or timeout for which we dropped it.
    """

    peer: Peer
    reason: str = ""


@attrs.frozen
class PeerUnresponsive:
    """A connected peer has sent nothing, not even a PONG, for ``silent_for`` seconds.

    Its host still acknowledges our bytes, so the process is frozen or
    stuck (see ``unresponsive_timeout`` and ``drop_unresponsive``).
    """

    peer: Peer
    silent_for: float


@attrs.frozen
class PeerResponsive:
    """A peer reported unresponsive spoke again."""

    peer: Peer


@attrs.frozen
class SubscriptionAdded:
    """A peer subscribed with a regexp."""

    peer: Peer
    subscription_id: int
    regexp: str


@attrs.frozen
class SubscriptionChanged:
    """A peer replaced the regexp of one of its subscriptions (same id)."""

    peer: Peer
    subscription_id: int
    regexp: str
    old_regexp: str


@attrs.frozen
class SubscriptionRemoved:
    """A peer removed one of its subscriptions."""

    peer: Peer
    subscription_id: int
    regexp: str


@attrs.frozen
class DirectMessage:
    """A DIRECT_MSG a peer sent us."""

    peer: Peer
    num_id: int
    text: str


@attrs.frozen
class ErrorReceived:
    """An ERROR a peer sent us."""

    peer: Peer
    num_id: int
    text: str


@attrs.frozen
class DieReceived:
    """A peer asked us to die; ``refused`` tells whether ``on_die`` refused."""

    peer: Peer
    num_id: int
    refused: bool


@attrs.frozen
class Congestion:
    """A peer's outgoing buffer is over its limit.

    ``dropped`` is the number of bytes discarded for it: by ``send_nowait``,
    or by ``send`` when it waits for no peer (see the backpressure guide).
    """

    peer: Peer
    buffered: int
    dropped: int


BusEvent = (
    PeerConnected
    | PeerDisconnected
    | PeerUnresponsive
    | PeerResponsive
    | SubscriptionAdded
    | SubscriptionChanged
    | SubscriptionRemoved
    | DirectMessage
    | ErrorReceived
    | DieReceived
    | Congestion
)

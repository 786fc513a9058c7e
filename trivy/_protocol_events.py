"""What a peer's lines mean: the events :class:`~trivy._connection.Connection` returns,
and where its handshake stands.

Small named tuples, since one is made per line on the hot path; a MSG is an
even plainer ``(sub_id, groups, size)`` tuple (:data:`MsgTuple`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = [
    "Bye",
    "Closing",
    "ConnectionState",
    "DieRequested",
    "DirectReceived",
    "ErrorReceived",
    "Event",
    "HandshakeDone",
    "Malformed",
    "MsgTuple",
    "PeerIdentified",
    "PingReceived",
    "PongReceived",
    "RegexpAdded",
    "RegexpRejected",
    "RegexpRemoved",
    "TextReceived",
    "UnknownType",
]


class ConnectionState(enum.Enum):
    """Where the handshake with one peer stands."""

    AWAITING_START = "awaiting START_REGEXP"
    RECEIVING_SUBSCRIPTIONS = "receiving the initial subscriptions"
    READY = "ready"
    CLOSED = "closed"


class PeerIdentified(NamedTuple):
    """START_REGEXP: the peer's name and TCP listening port."""

    name: str
    port: int


class RegexpAdded(NamedTuple):
    """ADD_REGEXP; ``replaced`` is the regexp it replaces under the same id."""

    sub_id: int
    regexp: str
    replaced: str | None


class RegexpRejected(NamedTuple):
    """ADD_REGEXP of a regexp we cannot compile; the ERROR answer is queued.

    It is not a subscription. ``replaced`` is the regexp that had the same
    id before: the peer meant to replace it, so it is gone too.
    """

    sub_id: int
    regexp: str
    reason: str
    replaced: str | None


class RegexpRemoved(NamedTuple):
    """DEL_REGEXP of a known subscription."""

    sub_id: int
    regexp: str


class HandshakeDone(NamedTuple):
    """END_REGEXP: the peer sent all its initial subscriptions."""


class TextReceived(NamedTuple):
    """MSG: one of our subscriptions matched a text the peer sent.

    :meth:`Connection.receive_data` hands MSGs out as plain
    ``(sub_id, groups, size)`` tuples, equal to this named tuple but cheaper
    to make (one is made per message): tell them apart from the other
    events with ``type(event) is tuple``. ``size`` is what buffering the
    match costs: the characters of the groups with their separators, and
    :data:`~trivy._connection.GROUP_COST` per group.
    """

    sub_id: int
    groups: tuple[str, ...]
    size: int


#: What ``receive_data`` gives for a MSG: ``(sub_id, groups, size)``.
MsgTuple = tuple[int, tuple[str, ...], int]


class ErrorReceived(NamedTuple):
    """ERROR sent by the peer."""

    num_id: int
    text: str


class DirectReceived(NamedTuple):
    """DIRECT_MSG sent by the peer."""

    num_id: int
    text: str


class DieRequested(NamedTuple):
    """DIE: the peer asks us to terminate."""

    num_id: int


class PingReceived(NamedTuple):
    """PING: answer with :meth:`~trivy._connection.Connection.send_pong` (same id)."""

    num_id: int


class PongReceived(NamedTuple):
    """PONG; ``expected`` is False when it answers no PING we sent."""

    num_id: int
    expected: bool


class Bye(NamedTuple):
    """BYE (or end of stream): the peer is leaving."""


class Malformed(NamedTuple):
    """A line we could not use; the ERROR quoting ``reply`` is already queued."""

    line: str
    reply: str


class UnknownType(NamedTuple):
    """A well-formed line of a type this protocol version does not know."""

    msg_type: int
    num_id: int
    params: str


class Closing(NamedTuple):
    """The peer overstepped a limit: close the connection (an ERROR is queued)."""

    reason: str


Event = (
    PeerIdentified
    | RegexpAdded
    | RegexpRejected
    | RegexpRemoved
    | HandshakeDone
    | TextReceived
    | MsgTuple
    | ErrorReceived
    | DirectReceived
    | DieRequested
    | PingReceived
    | PongReceived
    | Bye
    | Malformed
    | UnknownType
    | Closing
)

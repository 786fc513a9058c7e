"""The per-peer protocol state machine, without any I/O.

A :class:`Connection` is fed the bytes that arrive from one peer
(:meth:`Connection.receive_data`) and returns what they mean as a list of
events; it keeps the handshake state and the peer's subscriptions. The bytes
we send are made by :mod:`trivy.protocol` and :meth:`Connection.handshake`.
The trio shell (:mod:`trivy._bus`) moves bytes; everything the protocol
decides is decided here, where it is tested on bytes alone.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Iterable
from typing import NamedTuple

from . import protocol
from ._errors import IvyMalformedMessage
from .protocol import ARG_END, ARG_START, MsgType

__all__ = [
    "MAX_LINE_LENGTH",
    "MAX_MALFORMED_STREAK",
    "Bye",
    "Closing",
    "Connection",
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
    "RegexpRemoved",
    "TextReceived",
    "UnknownType",
    "duplicate_loser",
]

#: Longest line accepted from a peer. Ivy messages are short text (ivy-c
#: starts its buffer at 4 KiB and grows it); 1 MiB leaves room for any real
#: message while bounding what one peer can make us hold in memory.
MAX_LINE_LENGTH = 1024 * 1024
#: Malformed lines in a row after which a peer is taken as garbage and
#: dropped. ivy-java sends a two-line malformed ERROR now and then, so a
#: few must be tolerated; a hundred in a row is no Ivy peer.
MAX_MALFORMED_STREAK = 100


class ConnectionState(enum.Enum):
    """Where the handshake with one peer stands."""

    AWAITING_START = "awaiting START_REGEXP"
    RECEIVING_SUBSCRIPTIONS = "receiving the initial subscriptions"
    READY = "ready"
    CLOSED = "closed"


# Events: small named tuples, since one is made per message on the hot path.


class PeerIdentified(NamedTuple):
    """START_REGEXP: the peer's name and TCP listening port."""

    name: str
    port: int


class RegexpAdded(NamedTuple):
    """ADD_REGEXP; ``replaced`` is the regexp it replaces under the same id."""

    sub_id: int
    regexp: str
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
    ``(sub_id, groups)`` tuples, equal to this named tuple but cheaper to
    make (one is made per message): tell them apart from the other events
    with ``type(event) is tuple``.
    """

    sub_id: int
    groups: tuple[str, ...]


#: What ``receive_data`` gives for a MSG: ``(sub_id, groups)``.
MsgTuple = tuple[int, tuple[str, ...]]


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
    """PING: answer PONG with the same id."""

    num_id: int


class PongReceived(NamedTuple):
    """PONG: the answer to one of our PINGs."""

    num_id: int


class Bye(NamedTuple):
    """BYE (or end of stream): the peer is leaving."""


class Malformed(NamedTuple):
    """A line we could not use; ``reply`` is the ERROR text to answer with."""

    line: str
    reply: str


class UnknownType(NamedTuple):
    """A well-formed line of a type this protocol version does not know."""

    msg_type: int
    num_id: int
    params: str


class Closing(NamedTuple):
    """The peer overstepped a limit; the connection must be closed."""

    reason: str


Event = (
    PeerIdentified
    | RegexpAdded
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

_decode_utf8 = codecs.utf_8_decode
#: Distinct MSG heads remembered per connection (a peer sees as many ids as
#: we have subscriptions).
_MAX_CACHED_IDS = 4096
_BAD_FORMAT = "bad format request expected 'type id ...'"


class Connection:
    """The protocol state of one peer connection.

    Args:
      max_line_length: longest line accepted before the peer is dropped.
      java_newlines: turn ivy-java's ``\\x1a`` escape back into ``\\n`` in
        received texts.
    """

    def __init__(
        self, *, max_line_length: int = MAX_LINE_LENGTH, java_newlines: bool = False
    ) -> None:
        self.state = ConnectionState.AWAITING_START
        #: The peer's name and listening port, once START_REGEXP arrived.
        self.peer_name: str | None = None
        self.peer_port: int | None = None
        #: The peer's subscriptions: id → regexp, in the order they came.
        self.subscriptions: dict[int, str] = {}
        self._max_line_length = max_line_length
        self._java_newlines = java_newlines
        # The start of a line whose end has not come yet, as the pieces that
        # brought it (joined once, when the end comes: no quadratic copying
        # for a peer that dribbles a long line).
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._malformed_streak = 0
        # "2 <id>" → id: parsing the same few ids again costs more than a look-up
        self._msg_ids: dict[str, int] = {}

    @staticmethod
    def handshake(port: int, agent_name: str, subscriptions: Iterable[tuple[int, str]]) -> bytes:
        """The bytes that open our side of a connection.

        START_REGEXP (our listening port and name), one ADD_REGEXP per
        subscription, END_REGEXP.
        """
        parts = [protocol.encode(MsgType.START_REGEXP, port, agent_name)]
        parts.extend(
            protocol.encode(MsgType.ADD_REGEXP, sub_id, regexp) for sub_id, regexp in subscriptions
        )
        parts.append(protocol.encode(MsgType.END_REGEXP, 0))
        return b"".join(parts)

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes received from the peer; get back what they mean.

        ``b""`` means the peer closed the stream: a :class:`Bye` event.
        A partial line is kept until its end arrives (ivy-c splits a MSG
        across writes). After a :class:`Bye` or :class:`Closing` event, the
        connection is closed and further data is ignored.
        """
        if self.state is ConnectionState.CLOSED:
            return []
        if not data:
            self.state = ConnectionState.CLOSED
            return [Bye()]
        end = data.rfind(b"\n")
        if end < 0:
            self._partial.append(data)
            self._partial_size += len(data)
            return self._check_line_length([])
        if self._partial:
            end += self._partial_size
            data = b"".join([*self._partial, data])
            self._partial.clear()
        rest = data[end + 1 :]
        self._partial_size = len(rest)
        if rest:
            self._partial.append(rest)
        # One decode for every complete line: "\n" never falls inside a
        # UTF-8 sequence, so decoding up to it is exact.
        lines = _decode_utf8(memoryview(data)[:end], "surrogateescape", True)[0].split("\n")
        events: list[Event] = []
        append = events.append
        ready = self.state is ConnectionState.READY
        ids = self._msg_ids
        for line in lines:
            # Fast path for the most common line: a MSG once ready.
            if ready and line[:2] == "2 ":
                head, sep, params = line.partition(ARG_START)
                sub_id = ids.get(head)
                if sub_id is None:
                    try:
                        sub_id = int(head[2:])
                    except ValueError:
                        sub_id = -1
                    if len(ids) < _MAX_CACHED_IDS:
                        ids[head] = sub_id
                if sep and sub_id >= 0:
                    self._malformed_streak = 0
                    if params[-1:] == "\r":  # a CRLF peer
                        params = params[:-1]
                    if self._java_newlines:
                        params = params.replace(protocol.JAVA_NEWLINE_ESCAPE, "\n")
                    parts = params.split(ARG_END)
                    if not parts[-1]:  # after the final ETX, or no params at all
                        parts.pop()
                    append((sub_id, tuple(parts)))
                    continue
            event = self._line_event(line)
            if event is not None:
                append(event)
                if isinstance(event, (Bye, Closing)):
                    self.state = ConnectionState.CLOSED
                    self._partial.clear()
                    return events
                ready = self.state is ConnectionState.READY
        return self._check_line_length(events)

    def _check_line_length(self, events: list[Event]) -> list[Event]:
        if self._partial_size > self._max_line_length:
            self.state = ConnectionState.CLOSED
            self._partial.clear()
            events.append(Closing(f"line longer than {self._max_line_length} bytes"))
        return events

    def _malformed(self, line: str, reply: str) -> Malformed | Closing:
        self._malformed_streak += 1
        if self._malformed_streak >= MAX_MALFORMED_STREAK:
            return Closing(f"{MAX_MALFORMED_STREAK} malformed lines in a row")
        return Malformed(line, reply)

    def _line_event(self, line: str) -> Event | None:
        if line.endswith("\r"):  # tolerate CRLF peers
            line = line[:-1]
        if not line:
            return None
        try:
            msg = protocol.decode(line)
        except IvyMalformedMessage:
            return self._malformed(line, _BAD_FORMAT)
        self._malformed_streak = 0
        msg_type, num_id, params = msg
        if self.state is ConnectionState.AWAITING_START:
            if msg_type == MsgType.START_REGEXP:
                self.state = ConnectionState.RECEIVING_SUBSCRIPTIONS
                self.peer_name, self.peer_port = params.rstrip(ARG_END), num_id
                return PeerIdentified(self.peer_name, num_id)
            if msg_type not in (MsgType.BYE, MsgType.PING, MsgType.ERROR):
                return self._malformed(line, "expected START_REGEXP first")
        elif msg_type == MsgType.START_REGEXP:
            return self._malformed(line, "START_REGEXP sent twice")

        if self._java_newlines and msg_type in (MsgType.MSG, MsgType.DIRECT_MSG):
            params = params.replace(protocol.JAVA_NEWLINE_ESCAPE, "\n")
        if msg_type == MsgType.MSG:
            return (num_id, protocol.split_msg_params(params))
        if msg_type == MsgType.ADD_REGEXP:
            regexp = params[:-1] if params.endswith(ARG_END) else params
            replaced = self.subscriptions.get(num_id)
            self.subscriptions[num_id] = regexp
            return RegexpAdded(num_id, regexp, replaced)
        if msg_type == MsgType.DEL_REGEXP:
            removed = self.subscriptions.pop(num_id, None)
            return None if removed is None else RegexpRemoved(num_id, removed)
        if msg_type == MsgType.END_REGEXP:
            if self.state is ConnectionState.RECEIVING_SUBSCRIPTIONS:
                self.state = ConnectionState.READY
                return HandshakeDone()
            return None  # a repeated END_REGEXP changes nothing
        if msg_type == MsgType.PING:
            return PingReceived(num_id)
        if msg_type == MsgType.PONG:
            return PongReceived(num_id)
        if msg_type == MsgType.DIRECT_MSG:
            return DirectReceived(num_id, params)
        if msg_type == MsgType.ERROR:
            return ErrorReceived(num_id, params)
        if msg_type == MsgType.DIE:
            return DieRequested(num_id)
        if msg_type == MsgType.BYE:
            return Bye()
        return UnknownType(msg_type, num_id, params)


def duplicate_loser(local_port: int, remote_port: int) -> int:
    """The key ivy-c uses to pick which of two connections to one peer closes.

    Each side computes ``max(local, remote)`` for each of the two
    connections; the connection with the larger value is closed. Both sides
    compute the same numbers, so they agree without talking.
    """
    return max(local_port, remote_port)

"""One peer's Ivy protocol, both ways, without any I/O (the h11/wsproto model).

A :class:`Connection` is fed the bytes that arrive from one peer
(:meth:`Connection.receive_data`) and returns what they mean as events
(:mod:`trivy._protocol_events`). Everything we send the peer is made by its
``send_*`` methods, which check it (our handshake first, nothing after BYE,
no line over the limit) and queue its bytes in a private buffer (its
:class:`~trivy._send_buffer.SendBuffer`, which also keeps the flow control
of the router's MSGs, as h2 does); the ERROR to a malformed line is queued
there by ``receive_data`` itself, the PONG to a PING by whoever acts on the
events (:meth:`Connection.send_pong`), after those before it. The I/O layer
takes the queued bytes with :meth:`Connection.data_to_send` (as h2 hands
them out) and writes them. Nothing here imports trio, socket, os or time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import protocol
from ._errors import IvyIllegalStateError, IvyMalformedMessage
from ._lines import LineBuffer
from ._msg_bytes import MSG_HEADS, MSG_IDS, msg_head, msg_id, msg_payload
from ._peer_regexps import PeerRegexps
from ._protocol_events import (
    Bye,
    Closing,
    ConnectionState,
    DieRequested,
    DirectReceived,
    ErrorReceived,
    Event,
    HandshakeDone,
    Malformed,
    PeerIdentified,
    PingReceived,
    PongReceived,
    RegexpAdded,
    RegexpRejected,
    UnknownType,
)
from ._send_buffer import (
    MAX_EXCESS,
    MAX_LINE_LENGTH,
    QUEUED,
    QUEUED_OVER_LIMIT,
    REFUSED,
    SendBuffer,
)
from .protocol import ARG_END, ARG_START, MAX_MSG_GROUPS, MsgType

__all__ = [
    "GROUP_COST",
    "MAX_EXCESS",
    "MAX_LINE_LENGTH",
    "MAX_MALFORMED_STREAK",
    "MAX_NAME_LENGTH",
    "MSG_HEADS",
    "QUEUED",
    "QUEUED_OVER_LIMIT",
    "REFUSED",
    "Connection",
    "ConnectionState",
    "msg_head",
    "msg_payload",
]

#: The longest agent name a peer may give, in characters: names are a few
#: words; each is kept for as long as the peer is connected.
MAX_NAME_LENGTH = 1024
#: Malformed lines in a row after which a peer is taken as garbage and
#: dropped. ivy-java sends a two-line malformed ERROR now and then, so a
#: few must be tolerated; a hundred in a row is no Ivy peer.
MAX_MALFORMED_STREAK = 100
#: How much of an offending line an ERROR quotes back: enough to recognise
#: it, never an echo of a huge line.
MAX_QUOTED = 200
#: ivy-c answers a malformed line with ERROR id 3.
BAD_FORMAT_ID = 3
BAD_FORMAT = "bad format request expected 'type id ...'"
ALREADY_CONNECTED = "Application already connected"

#: What a group of a MSG costs in memory besides its characters: the string
#: object and its slot in the tuple. A MSG's size counts it, and four times
#: its all when it is not ASCII (a character may then take 4 bytes, and a
#: group's object 84): 1,000 two-character groups are 66 KB, not 2 KB.
GROUP_COST = 64
_BYE = protocol.encode(MsgType.BYE, 0)


# The states receive_data tests on every read, as module names: an Enum
# member is a class attribute, a load CPython 3.11 does not specialize.
_CLOSED = ConnectionState.CLOSED
_READY = ConnectionState.READY


class Connection(SendBuffer):
    """The protocol state of one peer connection, both ways.

    Args:
      max_line_length: longest line accepted before the peer is dropped.
      java_newlines: turn ivy-java's ``\\x1a`` escape back into ``\\n`` in
        received texts, and ``\\n`` into it in the texts we send.
      regexps: the peer's subscriptions and their limits (default ones if
        None). Whether a regexp compiles is for the matcher to say
        (:meth:`reject_regexp`).
      send_limit: bytes queued and unsent past which the router's MSGs
        are refused, or queued only for a sender that will wait.
      max_name_length: the longest agent name the peer may give (longer:
        ERROR, and the connection closes).

    Attributes:
      state: where the peer's side of the handshake stands.
      peer_name, peer_port: from its START_REGEXP (None before).
      subscriptions: the peer's regexps that compiled, by id, in order.

    What it sends, its checks and flow control are its
    :class:`~trivy._send_buffer.SendBuffer`'s.
    """

    def __init__(
        self,
        *,
        max_line_length: int = MAX_LINE_LENGTH,
        java_newlines: bool = False,
        regexps: PeerRegexps | None = None,
        send_limit: int = 2**62,
        max_name_length: int = MAX_NAME_LENGTH,
    ) -> None:
        self.state = ConnectionState.AWAITING_START
        self.peer_name: str | None = None
        self.peer_port: int | None = None
        self._regexps = PeerRegexps() if regexps is None else regexps
        self.subscriptions: dict[int, str] = self._regexps.by_id
        super().__init__(send_limit)
        self._java_newlines = java_newlines
        self._max_name_length = max_name_length
        self._said_hello = False
        self._pings_sent: set[int] = set()
        self._next_ping_id = 1
        self._lines = LineBuffer(max_line_length)
        self._malformed_streak = 0

    # ---------------------------------------------------------------- output
    def _text(self, text: str) -> str:
        if self._java_newlines:
            return text.replace("\n", protocol.JAVA_NEWLINE_ESCAPE)
        return text

    def send_handshake(
        self, port: int, agent_name: str, subscriptions: Iterable[tuple[int, str]] | bytes
    ) -> None:
        """Open our side: START_REGEXP (our port and name), our regexps, END_REGEXP.

        Raises:
          IvyIllegalStateError: the handshake was sent already.
        """
        if self._said_hello:
            raise IvyIllegalStateError("the handshake was sent already")
        self._said_hello = self._open = True
        self._queue(MsgType.START_REGEXP, port, agent_name)
        if isinstance(subscriptions, bytes):  # (their ADD_REGEXP lines, encoded)
            self._queue_lines(subscriptions)
        else:
            for sub_id, regexp in subscriptions:
                self._queue(MsgType.ADD_REGEXP, sub_id, regexp)
        self._queue(MsgType.END_REGEXP, 0)

    def send_subscription(self, sub_id: int, regexp: str) -> None:
        """ADD_REGEXP: subscribe (or replace the regexp of ``sub_id``)."""
        self._queue(MsgType.ADD_REGEXP, sub_id, regexp)

    def send_unsubscription(self, sub_id: int) -> None:
        """DEL_REGEXP: drop our subscription ``sub_id``."""
        self._queue(MsgType.DEL_REGEXP, sub_id)

    def send_msg(self, sub_id: int, groups: Sequence[str]) -> None:
        """One MSG for the peer's subscription ``sub_id``."""
        self._queue(MsgType.MSG, sub_id, [self._text(g) for g in groups])

    def send_direct(self, num_id: int, text: str) -> bool:
        """DIRECT_MSG, if the peer has room (see :meth:`has_room`); whether it was queued.

        Raises:
          TypeError: the id is not an int, or the text not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"the text must be a str, not {type(text).__name__}")
        return self._queue(MsgType.DIRECT_MSG, num_id, self._text(text), bounded=True)

    def send_error(self, num_id: int, text: str) -> bool:
        """ERROR, if the peer has room; whether it was queued."""
        return self._queue(MsgType.ERROR, num_id, text, bounded=True)

    def send_die(self, num_id: int = 0, text: str = "") -> bool:
        """DIE: ask the peer to terminate, if it has room; whether it was queued."""
        return self._queue(MsgType.DIE, num_id, text, bounded=True)

    def send_ping(self) -> int:
        """PING; returns its id, which the peer's PONG will carry."""
        ping_id = self._next_ping_id
        self._queue(MsgType.PING, ping_id)
        self._next_ping_id += 1
        self._pings_sent.add(ping_id)
        return ping_id

    def forget_ping(self, ping_id: int) -> None:
        """Stop expecting the PONG of ``ping_id`` (its waiter gave up)."""
        self._pings_sent.discard(ping_id)

    def send_raw(self, msg_type: int, num_id: int, params: str | Sequence[str] = "") -> bool:
        """Any protocol message, as it is (:func:`trivy.protocol.encode`), if the peer has room."""
        return self._queue(msg_type, num_id, params, bounded=True)

    def send_bye(self) -> None:
        """BYE: our last message; nothing can be sent after it."""
        if not self._said_bye:
            self._outgoing += _BYE
            self.bytes_queued += len(_BYE)
            self._said_bye, self._open = True, False

    def reject_duplicate(self) -> None:
        """Tell the peer this connection is a duplicate (ivy-c's words); nothing follows."""
        self._reply(MsgType.ERROR, 0, ALREADY_CONNECTED)
        self._said_bye, self._open = True, False

    def reject_regexp(
        self, sub_id: int, regexp: str, reason: str, offset: int = 0
    ) -> RegexpRejected:
        """Refuse the peer's regexp ``sub_id``: forget it, queue ivy-c's ERROR.

        For a regexp the matcher could not compile (see
        :func:`~trivy._peer_regexps.regexp_error`); :meth:`receive_data`
        refuses those over a limit itself.
        """
        self._error_compiling(regexp, reason, offset)
        return self._regexps.reject(sub_id, regexp, reason)

    def _error_compiling(self, regexp: str, reason: str, offset: int = 0) -> None:
        quoted = regexp[:MAX_QUOTED]
        self._reply(MsgType.ERROR, offset, f"Error compiling '{quoted}', {reason[:MAX_QUOTED]}")

    # ------------------------------------------------------------ their side
    def send_pong(self, num_id: int) -> None:
        """PONG to the peer's PING ``num_id`` (a reply: counted, and not after BYE).

        Sent by whoever acts on the events, once it has acted on those before
        the PING: a PONG tells the peer its lines before it were handled
        (their ERRORs included).
        """
        self._reply(MsgType.PONG, num_id)

    @property
    def bytes_held(self) -> int:
        """Bytes held for the peer: queued, handed out unsent, its unfinished line."""
        return self.bytes_queued + self.bytes_unsent + self._lines.pending

    def limit_memory(self, send_limit: int, max_line_length: int, max_excess: int) -> None:
        """New limits on what we queue for the peer and on its lines.

        A line already longer than the new limit closes the connection when
        its next bytes come; queued bytes over it drain, as over any limit.
        """
        self.send_limit = send_limit
        self.max_excess = max_excess
        self._lines.max_line_length = max_line_length

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes received from the peer; get back what they mean.

        ``b""`` means the peer closed the stream: a :class:`Bye` event.
        A partial line is kept until its end arrives (ivy-c splits a MSG
        across writes). Replies the lines call for are queued for
        :meth:`data_to_send`. After a :class:`Bye` or :class:`Closing` event,
        the connection is closed and further data is ignored.
        """
        if self.state is _CLOSED:
            return []
        if not data:
            self.state = _CLOSED
            return [Bye()]
        # (a CR anywhere in what these lines are made of: a CRLF peer, maybe)
        carriage_returns = b"\r" in data or self._lines.holds(b"\r")
        lines, too_long = self._lines.feed(data)
        ascii_lines = self._lines.ascii  # (then no MSG's size needs its own look)
        events: list[Event] = []
        append = events.append
        ready = self.state is _READY
        ids = MSG_IDS  # ("2 <id>" → id: a look-up costs less than parsing)
        java_newlines = self._java_newlines
        for line in lines:
            # Fast path for the most common line: a MSG once ready.
            if ready and line[:2] == "2 ":
                head, sep, params = line.partition(ARG_START)
                sub_id = ids.get(head)
                if sub_id is None:
                    sub_id = msg_id(head)
                if sep and sub_id >= 0:
                    self._malformed_streak = 0
                    if carriage_returns and params[-1:] == "\r":  # a CRLF peer
                        params = params[:-1]
                    if java_newlines:
                        params = params.replace(protocol.JAVA_NEWLINE_ESCAPE, "\n")
                    parts = params.split(ARG_END, MAX_MSG_GROUPS)  # (split no further)
                    if not parts[-1]:  # after the final ETX, or no params at all
                        parts.pop()
                    if len(parts) <= MAX_MSG_GROUPS:  # (more: the general path refuses it)
                        cost = len(params) + GROUP_COST * len(parts)
                        if not (ascii_lines or params.isascii()):
                            cost *= 4
                        append((sub_id, tuple(parts), cost))
                        continue
            event = self._line_event(line)
            if event is not None:
                append(event)
                if isinstance(event, (Bye, Closing)):
                    self.state = _CLOSED
                    self._lines.clear()
                    return events
                ready = self.state is _READY
        if too_long:
            self.state = _CLOSED
            events.append(self._closing(f"line longer than {self._lines.max_line_length} bytes"))
        return events

    def _closing(self, reason: str) -> Closing:
        self._reply(MsgType.ERROR, 0, reason)
        return Closing(reason)

    def _malformed(self, line: str, reply: str) -> Malformed | Closing:
        self._malformed_streak += 1
        if self._malformed_streak >= MAX_MALFORMED_STREAK:
            return self._closing(f"{MAX_MALFORMED_STREAK} malformed lines in a row")
        self._reply(MsgType.ERROR, BAD_FORMAT_ID, reply)
        return Malformed(line, reply)

    def _line_event(self, line: str) -> Event | None:
        if line.endswith("\r"):  # tolerate CRLF peers
            line = line[:-1]
        if not line:
            return None
        try:
            msg = protocol.decode(line)
        except IvyMalformedMessage:
            return self._malformed(line, BAD_FORMAT)
        msg_type, num_id, params = msg
        if self.state is ConnectionState.AWAITING_START:
            if msg_type == MsgType.START_REGEXP:
                name = params.rstrip(ARG_END)
                if len(name) > self._max_name_length:
                    return self._closing(f"agent name over {self._max_name_length} characters")
                self.state = ConnectionState.RECEIVING_SUBSCRIPTIONS
                self.peer_name, self.peer_port = name, num_id
                self._malformed_streak = 0
                return PeerIdentified(self.peer_name, num_id)
            if msg_type not in (MsgType.BYE, MsgType.PING, MsgType.ERROR):
                return self._malformed(line, "expected START_REGEXP first")
        elif msg_type == MsgType.START_REGEXP:
            return self._malformed(line, "START_REGEXP sent twice")
        self._malformed_streak = 0  # (a line that made sense: those out of place do not)

        if self._java_newlines and msg_type in (MsgType.MSG, MsgType.DIRECT_MSG):
            params = params.replace(protocol.JAVA_NEWLINE_ESCAPE, "\n")
        if msg_type == MsgType.MSG:
            if params.count(ARG_END, 0, -1) >= MAX_MSG_GROUPS:  # (before splitting it)
                return self._malformed(line, f"a MSG of over {MAX_MSG_GROUPS} groups")
            groups = protocol.split_msg_params(params)
            cost = len(params) + GROUP_COST * len(groups)
            return (num_id, groups, cost if params.isascii() else 4 * cost)
        if msg_type == MsgType.ADD_REGEXP:
            return self._regexp_added(num_id, params[:-1] if params.endswith(ARG_END) else params)
        if msg_type == MsgType.DEL_REGEXP:
            return self._regexps.removed(num_id)
        if msg_type == MsgType.END_REGEXP:
            if self.state is ConnectionState.RECEIVING_SUBSCRIPTIONS:
                self.state = ConnectionState.READY
                return HandshakeDone()
            return None  # a repeated END_REGEXP changes nothing
        if msg_type == MsgType.PING:
            return PingReceived(num_id)  # answered once the lines before it are (send_pong)
        if msg_type == MsgType.PONG:
            expected = num_id in self._pings_sent
            self._pings_sent.discard(num_id)
            return PongReceived(num_id, expected)
        if msg_type == MsgType.DIRECT_MSG:
            return DirectReceived(num_id, params)
        if msg_type == MsgType.ERROR:
            return ErrorReceived(num_id, params)
        if msg_type == MsgType.DIE:
            return DieRequested(num_id)
        if msg_type == MsgType.BYE:
            return Bye()
        return UnknownType(msg_type, num_id, params)

    def _regexp_added(self, sub_id: int, regexp: str) -> RegexpAdded | RegexpRejected:
        event = self._regexps.add(sub_id, regexp)
        if isinstance(event, RegexpRejected):
            self._error_compiling(regexp, event.reason)
        return event

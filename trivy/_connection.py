"""One peer's Ivy protocol, both ways, without any I/O (the h11/wsproto model).

A :class:`Connection` is fed the bytes that arrive from one peer
(:meth:`Connection.receive_data`) and returns what they mean as events
(:mod:`trivy._protocol_events`). Everything we send the peer is made by its
``send_*`` methods, which append the bytes to :attr:`Connection.outgoing`;
the replies a line calls for (PONG to a PING, ERROR to a malformed line or
to a regexp that does not compile) are queued there by ``receive_data``
itself. The I/O layer only writes ``outgoing`` to the socket and deletes
what the kernel took. Nothing here imports trio, socket, os or time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import protocol
from ._errors import IvyIllegalStateError, IvyMalformedMessage
from ._lines import LineBuffer
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
from .protocol import ARG_END, ARG_START, MsgType

__all__ = [
    "MAX_LINE_LENGTH",
    "MAX_MALFORMED_STREAK",
    "MSG_HEADS",
    "Connection",
    "ConnectionState",
    "msg_head",
    "msg_payload",
]

#: Longest line accepted from a peer. Ivy messages are short text (ivy-c
#: starts its buffer at 4 KiB and grows it); 1 MiB leaves room for any real
#: message while bounding what one peer can make us hold in memory.
MAX_LINE_LENGTH = 1024 * 1024
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

#: ``b"2 <id>\\x02"`` by subscription id: the head of every MSG we send, made
#: once per id. Our own ids are few; :func:`msg_head` caps the cache anyway,
#: since ``send_raw`` takes any id.
MSG_HEADS: dict[int, bytes] = {}
_MAX_MSG_HEADS = 4096
#: Distinct incoming MSG heads remembered per connection (a peer uses as many
#: ids as we have subscriptions); only short ones, so junk costs nothing.
_MAX_CACHED_IDS = 4096
_MAX_CACHED_HEAD = 24
_BYE = protocol.encode(MsgType.BYE, 0)


def msg_head(sub_id: int) -> bytes:
    """``b"2 <sub_id>\\x02"``, from :data:`MSG_HEADS` when it is there."""
    head = MSG_HEADS.get(sub_id)
    if head is None:
        head = b"2 %d\x02" % sub_id
        if len(MSG_HEADS) < _MAX_MSG_HEADS and len(head) <= _MAX_CACHED_HEAD:
            MSG_HEADS[sub_id] = head  # peers choose the ids: only short ones
    return head


def msg_payload(groups: Sequence[str]) -> bytes:
    """The bytes after a MSG's head: each group ended by ``\\x03``, then ``\\n``.

    Made once per matching regexp and shared by every subscriber of it.
    """
    text = ARG_END.join(groups) + "\x03\n" if groups else "\n"
    return text.encode("utf-8", "surrogateescape")


class Connection:
    """The protocol state of one peer connection, both ways.

    Args:
      max_line_length: longest line accepted before the peer is dropped.
      java_newlines: turn ivy-java's ``\\x1a`` escape back into ``\\n`` in
        received texts, and ``\\n`` into it in the texts we send.
      regexps: the peer's subscriptions and their limits (default ones if
        None). Whether a regexp compiles is for the matcher to say
        (:meth:`reject_regexp`).

    Attributes:
      state: where the peer's side of the handshake stands.
      peer_name, peer_port: from its START_REGEXP (None before).
      subscriptions: the peer's regexps that compiled, by id, in order.
      outgoing: bytes for the peer, oldest first. The I/O layer sends from
        the front and deletes what was sent; nothing else removes bytes.
    """

    def __init__(
        self,
        *,
        max_line_length: int = MAX_LINE_LENGTH,
        java_newlines: bool = False,
        regexps: PeerRegexps | None = None,
    ) -> None:
        self.state = ConnectionState.AWAITING_START
        self.peer_name: str | None = None
        self.peer_port: int | None = None
        self._regexps = PeerRegexps() if regexps is None else regexps
        self.subscriptions: dict[int, str] = self._regexps.by_id
        self.outgoing = bytearray()
        self._java_newlines = java_newlines
        #: Bytes of replies queued so far: the I/O layer pauses reading a
        #: peer whose lines make it answer past its output limit.
        self.replies_queued = 0
        self._said_hello = False
        self._said_bye = False
        self._pings_sent: set[int] = set()
        self._next_ping_id = 1
        self._lines = LineBuffer(max_line_length)
        self._malformed_streak = 0
        # "2 <id>" → id: parsing the same few ids again costs more than a look-up
        self._msg_ids: dict[str, int] = {}

    # ------------------------------------------------------------- our side
    def _queue(self, msg_type: int, num_id: int, params: str | Sequence[str] = "") -> None:
        if not self._said_hello or self._said_bye:
            state = "BYE was sent" if self._said_bye else "our handshake comes first"
            raise IvyIllegalStateError(f"cannot send on this connection: {state}")
        line = protocol.encode(msg_type, num_id, params)
        if len(line) > MAX_LINE_LENGTH + 1:
            size = len(line) - 1
            raise ValueError(f"a line of {size} bytes: peers refuse over {MAX_LINE_LENGTH}")
        self.outgoing += line

    def _text(self, text: str) -> str:
        if self._java_newlines:
            return text.replace("\n", protocol.JAVA_NEWLINE_ESCAPE)
        return text

    def send_handshake(
        self, port: int, agent_name: str, subscriptions: Iterable[tuple[int, str]]
    ) -> None:
        """Open our side: START_REGEXP (our port and name), our regexps, END_REGEXP.

        Raises:
          IvyIllegalStateError: the handshake was sent already.
        """
        if self._said_hello:
            raise IvyIllegalStateError("the handshake was sent already")
        self._said_hello = True
        self._queue(MsgType.START_REGEXP, port, agent_name)
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
        """One MSG for the peer's subscription ``sub_id``.

        The bus's router writes MSGs with :func:`msg_head` and
        :func:`msg_payload` directly, sharing one payload among subscribers.
        """
        self._queue(MsgType.MSG, sub_id, [self._text(g) for g in groups])

    def send_direct(self, num_id: int, text: str) -> None:
        """DIRECT_MSG."""
        self._queue(MsgType.DIRECT_MSG, num_id, self._text(text))

    def send_error(self, num_id: int, text: str) -> None:
        """ERROR."""
        self._queue(MsgType.ERROR, num_id, text)

    def send_die(self, num_id: int = 0, text: str = "") -> None:
        """DIE: ask the peer to terminate."""
        self._queue(MsgType.DIE, num_id, text)

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

    def send_raw(self, msg_type: int, num_id: int, params: str | Sequence[str] = "") -> None:
        """Any protocol message, as it is (see :func:`trivy.protocol.encode`)."""
        self._queue(msg_type, num_id, params)

    def send_bye(self) -> None:
        """BYE: our last message; nothing can be sent after it."""
        if not self._said_bye:
            self.outgoing += _BYE
            self._said_bye = True

    def reject_duplicate(self) -> None:
        """Tell the peer this connection is a duplicate (ivy-c's words); nothing follows."""
        self._reply(MsgType.ERROR, 0, ALREADY_CONNECTED)
        self._said_bye = True

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
    def _reply(self, msg_type: int, num_id: int, params: str = "") -> None:
        # Replies stop with our BYE.
        if not self._said_bye:
            line = protocol.encode(msg_type, num_id, params)
            self.replies_queued += len(line)
            self.outgoing += line

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes received from the peer; get back what they mean.

        ``b""`` means the peer closed the stream: a :class:`Bye` event.
        A partial line is kept until its end arrives (ivy-c splits a MSG
        across writes). Replies the lines call for are appended to
        :attr:`outgoing`. After a :class:`Bye` or :class:`Closing` event,
        the connection is closed and further data is ignored.
        """
        if self.state is ConnectionState.CLOSED:
            return []
        if not data:
            self.state = ConnectionState.CLOSED
            return [Bye()]
        lines, too_long = self._lines.feed(data)
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
                    if len(ids) < _MAX_CACHED_IDS and len(head) <= _MAX_CACHED_HEAD:
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
                    append((sub_id, tuple(parts), len(params)))
                    continue
            event = self._line_event(line)
            if event is not None:
                append(event)
                if isinstance(event, (Bye, Closing)):
                    self.state = ConnectionState.CLOSED
                    self._lines.clear()
                    return events
                ready = self.state is ConnectionState.READY
        if too_long:
            self.state = ConnectionState.CLOSED
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
            return (num_id, protocol.split_msg_params(params), len(params))
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
            self._reply(MsgType.PONG, num_id)
            return PingReceived(num_id)
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


"""One peer's Ivy protocol, both ways, without any I/O (the h11/wsproto model).

A :class:`Connection` is fed the bytes that arrive from one peer
(:meth:`Connection.receive_data`) and returns what they mean as events
(:mod:`trivy._protocol_events`). Everything we send the peer is made by its
``send_*`` methods, which check it (our handshake first, nothing after BYE,
no line over the limit) and queue its bytes in a private buffer; the
ERROR to a malformed line is queued there by ``receive_data`` itself, the
PONG to a PING by whoever acts on the events (:meth:`Connection.send_pong`),
after those before it.
The I/O layer takes the queued bytes with :meth:`Connection.data_to_send`
(as h2 hands them out) and writes them. Like h2, the connection also keeps
the flow control of what it sends: the router's MSGs
(:meth:`Connection.send_msg_payload`) are counted against the peer's limit,
with the bytes the I/O layer took and has not written yet
(:attr:`Connection.bytes_unsent`, which that layer keeps up to date).
Nothing here imports trio, socket, os or time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from . import protocol
from ._errors import IvyIllegalStateError, IvyMalformedMessage
from ._lines import LineBuffer
from ._msg_bytes import MAX_CACHED_HEAD, MSG_HEADS, msg_head, msg_payload
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
    "MAX_EXCESS",
    "MAX_LINE_LENGTH",
    "MAX_MALFORMED_STREAK",
    "MSG_HEADS",
    "QUEUED",
    "QUEUED_OVER_LIMIT",
    "REFUSED",
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

#: Distinct incoming MSG heads remembered per connection (a peer uses as many
#: ids as we have subscriptions); only short ones, so junk costs nothing.
_MAX_CACHED_IDS = 4096
#: How far past its limit one waiting ``send`` may queue for a peer: a text
#: that matches many of its subscriptions (10,000 ``(.*)`` once made one
#: send queue 2 GB). Beyond, that peer's MSGs of this send are refused.
MAX_EXCESS = 16 * 1024 * 1024

#: What :meth:`Connection.send_msg_payload` did with a MSG.
QUEUED = 0
QUEUED_OVER_LIMIT = 1  # queued, and the sender should wait for room
REFUSED = 2  # not queued: the peer is over its limit
_BYE = protocol.encode(MsgType.BYE, 0)
_LONGEST_LINE = MAX_LINE_LENGTH + 1  # with its newline


class Connection:
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

    Attributes:
      state: where the peer's side of the handshake stands.
      peer_name, peer_port: from its START_REGEXP (None before).
      subscriptions: the peer's regexps that compiled, by id, in order.
      bytes_queued: bytes waiting in the buffer for :meth:`data_to_send`
        (read-only: a plain attribute, as it is read once per MSG routed).
      bytes_unsent: bytes :meth:`data_to_send` handed out that the I/O
        layer has not written yet (the I/O layer sets it).
      wake_output: set by an I/O layer while it waits for bytes: called
        with the bytes queued before, when a MSG is queued.
      replies_queued: bytes of replies (PONG, ERROR) queued so far, in all:
        the I/O layer pauses reading a peer whose lines make it answer
        past its output limit.
    """

    def __init__(
        self,
        *,
        max_line_length: int = MAX_LINE_LENGTH,
        java_newlines: bool = False,
        regexps: PeerRegexps | None = None,
        send_limit: int = 2**62,
    ) -> None:
        self.state = ConnectionState.AWAITING_START
        self.peer_name: str | None = None
        self.peer_port: int | None = None
        self._regexps = PeerRegexps() if regexps is None else regexps
        self.subscriptions: dict[int, str] = self._regexps.by_id
        self._outgoing = bytearray()
        self.bytes_queued = 0
        self.bytes_unsent = 0
        self.send_limit = send_limit
        self.wake_output: Callable[[int], None] | None = None
        self._java_newlines = java_newlines
        self.replies_queued = 0
        self._said_hello = False
        self._said_bye = False
        self._open = False  # hello said, BYE not: what may be sent may be
        self._pings_sent: set[int] = set()
        self._next_ping_id = 1
        self._lines = LineBuffer(max_line_length)
        self._malformed_streak = 0
        # "2 <id>" → id: parsing the same few ids again costs more than a look-up
        self._msg_ids: dict[str, int] = {}

    # ---------------------------------------------------------------- output
    def data_to_send(self) -> bytearray:
        """Everything queued for the peer, oldest first; the buffer starts anew.

        The caller owns what it gets (no copy is made): it writes it, and
        keeps what the kernel did not take.
        """
        data, self._outgoing = self._outgoing, bytearray()
        self.bytes_queued = 0
        return data

    def _check_open(self) -> None:
        if not self._open:
            state = "BYE was sent" if self._said_bye else "our handshake comes first"
            raise IvyIllegalStateError(f"cannot send on this connection: {state}")

    def _queue(self, msg_type: int, num_id: int, params: str | Sequence[str] = "") -> None:
        self._check_open()
        line = protocol.encode(msg_type, num_id, params)
        if len(line) > MAX_LINE_LENGTH + 1:
            size = len(line) - 1
            raise ValueError(f"a line of {size} bytes: peers refuse over {MAX_LINE_LENGTH}")
        self._outgoing += line
        self.bytes_queued += len(line)

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
        self._said_hello = self._open = True
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
        """One MSG for the peer's subscription ``sub_id``."""
        self._queue(MsgType.MSG, sub_id, [self._text(g) for g in groups])

    def send_msg_payload(self, sub_id: int, payload: bytes, may_exceed: bool = False) -> int:
        """One MSG made of :func:`msg_payload`'s bytes, if the peer has room.

        The router's way: one text matching a regexp that many peers hold
        is encoded once, and each of them gets the same payload. (Java
        newlines were escaped in the text before it was matched.)

        Returns :data:`QUEUED`, :data:`QUEUED_OVER_LIMIT` (the peer was
        over ``send_limit`` and ``may_exceed``: the sender should wait for
        room) or :data:`REFUSED` (over the limit and not ``may_exceed``, or
        over it by :data:`MAX_EXCESS`: nothing was queued).

        Raises:
          IvyIllegalStateError: BYE was sent, or our handshake was not.
          ValueError: the line would be over :data:`MAX_LINE_LENGTH`.
        """
        before = self.bytes_queued
        queued = before + self.bytes_unsent
        limit = self.send_limit
        if queued > limit and (not may_exceed or queued > limit + MAX_EXCESS):
            return REFUSED
        if not self._open:
            self._check_open()
        out = self._outgoing
        out += MSG_HEADS.get(sub_id) or msg_head(sub_id)
        out += payload
        after = self.bytes_queued = len(out)
        if after - before > _LONGEST_LINE:  # (checked after: one test when fine)
            del out[before:]
            self.bytes_queued = before
            size = after - before - 1
            raise ValueError(f"a line of {size} bytes: peers refuse over {MAX_LINE_LENGTH}")
        if self.wake_output is not None:
            self.wake_output(queued)
        return QUEUED if queued <= limit else QUEUED_OVER_LIMIT

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

    def _reply(self, msg_type: int, num_id: int, params: str = "") -> None:
        # Replies stop with our BYE.
        if not self._said_bye:
            line = protocol.encode(msg_type, num_id, params)
            self.replies_queued += len(line)
            self.bytes_queued += len(line)
            self._outgoing += line

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes received from the peer; get back what they mean.

        ``b""`` means the peer closed the stream: a :class:`Bye` event.
        A partial line is kept until its end arrives (ivy-c splits a MSG
        across writes). Replies the lines call for are queued for
        :meth:`data_to_send`. After a :class:`Bye` or :class:`Closing` event,
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
                    if len(ids) < _MAX_CACHED_IDS and len(head) <= MAX_CACHED_HEAD:
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

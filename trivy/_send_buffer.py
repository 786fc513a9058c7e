"""What we send one peer: its bytes, the checks they pass, and flow control.

:class:`SendBuffer` is the sending half of a
:class:`~trivy._connection.Connection`: a private buffer that
:meth:`SendBuffer.data_to_send` hands out (as h2 does), the checks every
line passes (our handshake first, nothing after BYE, no line over the
limit), and, like h2, the flow control of the router's MSGs
(:meth:`SendBuffer.send_msg_payload`): what it holds and what the I/O layer
took and has not written yet (:attr:`SendBuffer.bytes_unsent`, which that
layer keeps up to date) count against the peer's limit. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import protocol
from ._errors import IvyIllegalStateError
from ._msg_bytes import MSG_HEADS, msg_head

__all__ = [
    "MAX_EXCESS",
    "MAX_LINE_LENGTH",
    "QUEUED",
    "QUEUED_OVER_LIMIT",
    "REFUSED",
    "SendBuffer",
]

#: Longest line accepted from a peer, and sent to one. Ivy messages are
#: short text (ivy-c starts its buffer at 4 KiB and grows it); 1 MiB leaves
#: room for any real message while bounding what one peer can make us hold
#: in memory.
MAX_LINE_LENGTH = 1024 * 1024
_LONGEST_LINE = MAX_LINE_LENGTH + 1  # with its newline
#: How far past its limit one waiting ``send`` may queue for a peer: a text
#: that matches many of its subscriptions (10,000 ``(.*)`` once made one
#: send queue 2 GB). Beyond, that peer's MSGs of this send are refused.
MAX_EXCESS = 16 * 1024 * 1024

#: What :meth:`SendBuffer.send_msg_payload` did with a MSG.
QUEUED = 0
QUEUED_OVER_LIMIT = 1  # queued, and the sender should wait for room
REFUSED = 2  # not queued: the peer is over its limit


# Bound once: CPython 3.11 compiles a method call on an imported name as an
# attribute load (as for a module's function), which made a bound method per MSG.
_cached_head = MSG_HEADS.get


class SendBuffer:
    """The bytes we queued for one peer, checked and counted.

    Args:
      send_limit: bytes queued and unsent past which the router's MSGs
        are refused, or queued only for a sender that will wait.

    Attributes:
      bytes_queued: bytes waiting in the buffer for :meth:`data_to_send`
        (read-only: a plain attribute, as it is read once per MSG routed).
      bytes_unsent: bytes :meth:`data_to_send` handed out that the I/O
        layer has not written yet (the I/O layer sets it).
      send_limit: the limit on both.
      max_excess: how far past ``send_limit`` a sender that will wait may
        queue (:data:`MAX_EXCESS`, less when many peers share the memory).
      excused: the senders do not wait for the peer (their patience with
        all the peers ran out): its MSGs over ``send_limit`` are refused, as
        for a sender that will not wait, until its output is empty again.
      wake_output: set by an I/O layer while it waits for bytes: called
        with the bytes queued before, when a MSG is queued.
      replies_queued: bytes of replies (PONG, ERROR) queued so far, in all:
        the I/O layer pauses reading a peer whose lines make it answer
        past its output limit.
    """

    def __init__(self, send_limit: int) -> None:
        self._outgoing = bytearray()
        self.bytes_queued = 0
        self.bytes_unsent = 0
        self.send_limit = send_limit
        self.max_excess = MAX_EXCESS
        self.excused = False
        self.wake_output: Callable[[int], None] | None = None
        self.replies_queued = 0
        self._said_bye = False
        self._open = False  # hello said, BYE not: what may be sent may be

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

    def has_room(self) -> bool:
        """Whether a line no sender waits for may still be queued.

        What the application sends one peer (a direct message, an ERROR, a
        DIE, a raw line) cannot wait: it is queued while the peer is within
        ``send_limit`` plus ``max_excess`` (within ``send_limit`` once it is
        ``excused``), as for a sender that waits, and refused past it.
        Without this, a peer that reads a trickle made us hold whatever was
        sent to it (1 MB direct messages took 3.9 GB in 25 s).
        """
        queued, limit = self.bytes_queued + self.bytes_unsent, self.send_limit
        return queued <= limit or (not self.excused and queued <= limit + self.max_excess)

    def _queue(
        self, msg_type: int, num_id: int, params: str | Sequence[str] = "", bounded: bool = False
    ) -> bool:
        """Queue one line; with ``bounded``, only if :meth:`has_room` (whether it was)."""
        self._check_open()
        if bounded and not self.has_room():
            return False
        if type(num_id) is not int:  # (a str or a float would make a malformed line)
            raise TypeError(f"the id must be an int, not {type(num_id).__name__}: {num_id!r}")
        if not isinstance(params, str) and not all(isinstance(p, str) for p in params):
            raise TypeError(f"the text must be a str, not {params!r}")
        line = protocol.encode(msg_type, num_id, params)
        if len(line) > MAX_LINE_LENGTH + 1:
            size = len(line) - 1
            raise ValueError(f"a line of {size} bytes: peers refuse over {MAX_LINE_LENGTH}")
        self._outgoing += line
        self.bytes_queued += len(line)
        return True

    def _queue_lines(self, lines: bytes) -> None:
        """Lines encoded already (each checked as :meth:`_queue` would)."""
        self._check_open()
        self._outgoing += lines
        self.bytes_queued += len(lines)

    def send_msg_payload(self, sub_id: int, payload: bytes, may_exceed: bool = False) -> int:
        """One MSG made of :func:`msg_payload`'s bytes, if the peer has room.

        The router's way: one text matching a regexp that many peers hold
        is encoded once, and each of them gets the same payload. (Java
        newlines were escaped in the text before it was matched.)

        Returns :data:`QUEUED`, :data:`QUEUED_OVER_LIMIT` (the peer was
        over ``send_limit`` and ``may_exceed``: the sender should wait for
        room) or :data:`REFUSED` (over the limit and not ``may_exceed``, or
        ``excused``, or over it by ``max_excess``: nothing was queued).

        Raises:
          IvyIllegalStateError: BYE was sent, or our handshake was not.
          ValueError: the line would be over :data:`MAX_LINE_LENGTH`.
        """
        before = self.bytes_queued
        queued = before + self.bytes_unsent
        limit = self.send_limit
        if queued > limit and (not may_exceed or self.excused or queued > limit + self.max_excess):
            return REFUSED
        if not self._open:
            self._check_open()
        out = self._outgoing
        out += _cached_head(sub_id) or msg_head(sub_id)
        out += payload
        after = self.bytes_queued = len(out)
        if after - before > _LONGEST_LINE:  # (checked after: one test when fine)
            del out[before:]
            self.bytes_queued = before
            size = after - before - 1
            raise ValueError(f"a line of {size} bytes: peers refuse over {MAX_LINE_LENGTH}")
        wake = self.wake_output  # (called as a method, an attribute is not specialized)
        if wake is not None:
            wake(queued)
        return QUEUED if queued <= limit else QUEUED_OVER_LIMIT

    def _reply(self, msg_type: int, num_id: int, params: str = "") -> None:
        # Replies stop with our BYE.
        if not self._said_bye:
            line = protocol.encode(msg_type, num_id, params)
            self.replies_queued += len(line)
            self.bytes_queued += len(line)
            self._outgoing += line

"""One TCP connection to a peer: its socket, protocol state and output buffer.

Sockets are plain non-blocking stdlib sockets driven with
``trio.lowlevel.wait_readable``/``wait_writable``: reads and writes are tried
at once and only wait when the kernel says so, which keeps the per-message
cost low. Everything we send to a peer is appended to its output buffer and
written by the link's writer task, so many small messages leave in one
``send`` call.
"""

from __future__ import annotations

import itertools
import logging
import socket

import trio

from ._connection import Connection
from ._events import Peer

__all__ = ["Link"]

logger = logging.getLogger("trivy")


class _PendingPing:
    __slots__ = ("answered", "round_trip", "sent_at")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.round_trip: float | None = None
        self.answered = trio.Event()


class Link:
    """The state of one peer connection, shared by its reader and writer tasks."""

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        connection: Connection,
        agent_id: str | None = None,
        announced_port: int = 0,
    ) -> None:
        self.sock = sock
        self.local_port: int = sock.getsockname()[1]
        self.remote_port: int = sock.getpeername()[1]
        self.conn = connection
        self.peer = Peer(name="", host=host, port=announced_port, agent_id=agent_id)
        # One dict for both: the Peer shows what the protocol state holds.
        self.peer.subscriptions = connection.subscriptions
        self.out = bytearray()
        self.ready = False
        self.closing = False
        self.dropped_bytes = 0
        #: Over its limit since the output buffer was last empty.
        self.congested = False
        self.reader_scope = trio.CancelScope()
        self.flushed = trio.Event()
        self._wake_writer = trio.lowlevel.ParkingLot()
        #: True while the writer task waits for data (a plain attribute: it
        #: is read once per message sent).
        self.writer_idle = False
        #: When :meth:`send_now` last wrote (``time.perf_counter``).
        self.last_direct_write = 0.0
        self.drained = trio.lowlevel.ParkingLot()
        self.drained_below = 0
        self.pings: dict[int, _PendingPing] = {}
        self._ping_ids = itertools.count(1)

    @property
    def identified(self) -> bool:
        """Whether the peer's START_REGEXP arrived."""
        return self.conn.peer_port is not None

    def wake_writer(self) -> None:
        """Tell the idle writer task that the output buffer has something.

        Hot paths append to :attr:`out` themselves and call this only when
        :attr:`writer_idle` is true.
        """
        self.writer_idle = False
        self._wake_writer.unpark()

    def send_now(self, data: bytes, now: float) -> None:
        """Write ``data`` straight to the socket; queue what the kernel refuses.

        For a lone message to an idle peer (empty buffer, idle writer): it
        saves the hop through the writer task, which is most of a round
        trip's cost. The caller checks those conditions.
        """
        self.last_direct_write = now
        try:
            sent = self.sock.send(data)
        except OSError:  # full, or broken: the writer task deals with it
            sent = 0
        if sent < len(data):
            self.out += data[sent:]
            self.wake_writer()

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer; the writer task sends them."""
        self.out += data
        if self.writer_idle:
            self.wake_writer()

    def close_after_flush(self, last_words: bytes = b"") -> None:
        """Send what is queued (and ``last_words``), then stop writing."""
        if last_words:
            self.out += last_words
        self.closing = True
        self.writer_idle = False
        self._wake_writer.unpark_all()

    def abort(self, last_words: bytes = b"") -> None:
        """Stop reading now; send what is queued and ``last_words``, then close."""
        self.close_after_flush(last_words)
        self.reader_scope.cancel()

    def start_ping(self) -> tuple[int, _PendingPing]:
        """Record a PING about to be sent; returns its id and its pending answer."""
        ping_id = next(self._ping_ids)
        pending = _PendingPing(trio.current_time())
        self.pings[ping_id] = pending
        return ping_id, pending

    def answer_ping(self, ping_id: int) -> bool:
        """A PONG arrived; False if it answers no PING of ours."""
        pending = self.pings.pop(ping_id, None)
        if pending is None:
            return False
        pending.round_trip = trio.current_time() - pending.sent_at
        pending.answered.set()
        return True

    def fail_pings(self) -> None:
        """The link is gone: wake everyone waiting for a PONG."""
        for pending in self.pings.values():
            pending.answered.set()
        self.pings.clear()

    async def run_writer(self) -> None:
        """Send the output buffer whenever it has something, until closing."""
        sock, out = self.sock, self.out
        try:
            while True:
                if not out:
                    if self.closing:
                        return
                    self.writer_idle = True
                    await self._wake_writer.park()
                    continue
                try:
                    sent = sock.send(out)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                del out[:sent]
                if not out:
                    self.congested = False
                if self.drained and len(out) <= self.drained_below:
                    self.drained.unpark_all()
        except OSError as exc:
            logger.info("%s: connection lost while sending: %s", self.peer, exc)
            out.clear()
            self.closing = True
            self.reader_scope.cancel()
        finally:
            self.flushed.set()
            self.drained.unpark_all()

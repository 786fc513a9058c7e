"""One peer, owned by one object: its socket, its protocol state and its tasks.

A :class:`PeerSession` reads the peer's bytes and hands them to its sans-IO
:class:`~trivy._connection.Connection`, passes the resulting events to the
bus through the :class:`SessionHandler` it was given, and writes whatever
the connection queued for the peer. It knows nothing of the bus: what the
events mean for the application is the handler's business.

Sockets are plain non-blocking stdlib sockets driven with
``trio.lowlevel.wait_readable``/``wait_writable``: reads and writes are tried
at once and only wait when the kernel says so, which keeps the per-message
cost low. Bytes for the peer pile up in ``conn.outgoing`` and the writer
task sends them, so many small messages leave in one ``send`` call.
"""

from __future__ import annotations

import logging
import socket
from types import MappingProxyType
from typing import Protocol

import attrs
import trio

from ._connection import Connection
from ._events import Peer
from ._leaving import flush_and_close
from ._liveness import configure_keepalive, wait_taking, watch_session
from ._logs import LogLimiter
from ._options import BusOptions
from ._protocol_events import Event

__all__ = ["PeerSession", "SessionHandler"]

logger = logging.getLogger("trivy")

#: Bytes asked of the kernel per read.
RECEIVE_SIZE = 256 * 1024
#: Reads served without waiting before the reader yields anyway.
READS_PER_CHECKPOINT = 16


class SessionHandler(Protocol):
    """What a session reports to (the bus's dispatcher implements it)."""

    async def dispatch(self, session: PeerSession, events: list[Event]) -> bool:
        """Act on the events of one read; False ends the connection."""

    def session_closing(self, session: PeerSession) -> None:
        """The session stops taking new output: it only flushes from now on."""

    def session_ended(self, session: PeerSession) -> None:
        """The session is over: its socket is closed, its tasks done."""

    def session_unresponsive(self, session: PeerSession, silent_for: float) -> None:
        """The peer has been silent for ``silent_for`` seconds (see ``_liveness``)."""

    def session_responsive(self, session: PeerSession) -> None:
        """The peer that was reported unresponsive spoke again."""


@attrs.define(eq=False)
class _PendingPing:
    sent_at: float
    answered: trio.Event = attrs.field(factory=trio.Event)
    round_trip: float | None = None


class PeerSession:
    """One peer connection: socket, protocol state, reader and writer.

    Args:
      sock: a connected TCP socket (made non-blocking here).
      host: the peer's address.
      conn: its protocol state.
      handler: told of every event and of the end.
      options: the limits and timeouts (``send_buffer_limit``: the bytes
        queued for the peer past which a waiting ``send`` waits, and its
        own lines may no longer add replies; ``stall_timeout``, liveness).
      agent_id, announced_port: from the peer's UDP announce, when we
        connected because of one.

    Raises:
      OSError: the socket is already unusable (the peer left at once).
    """

    def __init__(
        self,
        sock: socket.socket,
        host: str,
        conn: Connection,
        handler: SessionHandler,
        options: BusOptions,
        agent_id: str | None = None,
        announced_port: int = 0,
    ) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        configure_keepalive(sock, options.dead_host_timeout)
        #: (address, port) of each end of the TCP connection.
        self.local_address: tuple[str, int] = sock.getsockname()[:2]
        self.remote_address: tuple[str, int] = sock.getpeername()[:2]
        self.local_port = self.local_address[1]
        self.remote_port = self.remote_address[1]
        self.sock = sock
        self.conn = conn
        #: ``conn.outgoing`` itself, one attribute hop nearer for the router.
        self.out = conn.outgoing
        self.handler = handler
        self.options = options
        self.output_limit = options.send_buffer_limit
        self._replies_mark = 0  # replies_queued when the output was last empty
        #: This peer's share of the logs (rate-limited).
        self.log = LogLimiter(logger)
        self.peer = Peer(
            name="",
            host=host,
            port=announced_port,
            agent_id=agent_id,
            subscriptions=MappingProxyType(conn.subscriptions),  # a live, read-only view
        )
        self.ready = False
        self.became_ready = trio.Event()
        #: Reads, times a full peer made room again, and whether the reader
        #: now waits for the peer: the heartbeat's measure of silence.
        self.reads = 0
        self.drains = 0
        self.waiting_for_peer = False
        #: Why we ended the connection (reported in PeerDisconnected).
        self.end_reason = ""
        #: When its START_REGEXP arrived (trio time), for duplicate resolution.
        self.identified_at = 0.0
        #: Its regexps that need the guard, and how many ran out of time.
        self.guarded = 0
        self.guard_strikes = 0
        #: Nothing more will be written or read (set by close, abort, failure).
        self.closing = False
        #: Over its limit since its output was last empty (overflow policy).
        self.congested = False
        self.dropped_bytes = 0
        #: True while the writer task waits for data (a plain attribute: it
        #: is read once per message sent).
        self.writer_idle = False
        #: When :meth:`send_now` last wrote (``time.perf_counter``).
        self.last_direct_write = 0.0
        #: Woken when the output shrinks to ``drained_below`` bytes or less.
        self.drained = trio.lowlevel.ParkingLot()
        self.drained_below = 0
        self.flushed = trio.Event()
        #: Times the writer found the kernel's buffer full and had to wait.
        self.write_stalls = 0
        self._reader_scope = trio.CancelScope()
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._pings: dict[int, _PendingPing] = {}

    def __repr__(self) -> str:
        return f"<PeerSession {self.peer}>"

    @property
    def identified(self) -> bool:
        """Whether the peer's START_REGEXP arrived."""
        return self.conn.peer_port is not None

    # --------------------------------------------------------------- output
    def flush_soon(self) -> None:
        """Have the writer send what ``conn.outgoing`` holds."""
        if self.writer_idle and self.conn.outgoing:
            self.wake_writer()

    def wake_writer(self) -> None:
        """Wake the idle writer (hot paths check :attr:`writer_idle` first)."""
        self.writer_idle = False
        self._wake_writer.unpark()

    def send_now(self, data: bytes, now: float) -> None:
        """Write ``data`` straight to the socket; queue what the kernel refuses.

        For a lone message to an idle peer (empty output, idle writer): it
        saves the hop through the writer task, which is most of a round
        trip's cost. The caller checks those conditions.
        """
        self.last_direct_write = now
        try:
            sent = self.sock.send(data)
        except OSError:  # full, or broken: the writer task deals with it
            sent = 0
        if sent < len(data):
            self.conn.outgoing += data[sent:]
            self.wake_writer()

    def close(self) -> None:
        """Send what is queued, then stop writing; nothing new is routed here."""
        if not self.closing:
            self.closing = True
            self.handler.session_closing(self)
        self.writer_idle = False
        self._wake_writer.unpark_all()

    def say_bye(self) -> None:
        """Queue BYE after what is queued, then close."""
        self.conn.send_bye()
        self.close()

    def abort(self, reason: str = "") -> None:
        """Stop reading now; send what is queued, then close."""
        if reason and not self.end_reason:
            self.end_reason = reason
        self.close()
        self._reader_scope.cancel()

    # ---------------------------------------------------------------- pings
    async def ping(self) -> float:
        """PING the peer, wait for its PONG; returns the round trip in seconds.

        Raises:
          ConnectionError: the peer left before answering.
          IvyIllegalStateError: we already said BYE on this connection.
        """
        ping_id = self.conn.send_ping()
        pending = self._pings[ping_id] = _PendingPing(trio.current_time())
        self.flush_soon()
        try:
            await pending.answered.wait()
        finally:
            if self._pings.pop(ping_id, None) is not None:
                self.conn.forget_ping(ping_id)
        if pending.round_trip is None:
            raise ConnectionError(f"{self.peer} left before answering the PING")
        return pending.round_trip

    def pong(self, ping_id: int) -> None:
        """The PONG of ``ping_id`` arrived."""
        pending = self._pings.pop(ping_id, None)
        if pending is not None:
            pending.round_trip = trio.current_time() - pending.sent_at
            pending.answered.set()

    # ---------------------------------------------------------------- tasks
    async def run(self) -> None:
        """Serve the peer until either side ends the connection.

        A third task watches the peer's liveness (handshake deadline,
        heartbeat: see ``_liveness``).

        An error in the peer's handling is logged, never raised: one peer
        cannot take the bus down.

        Reads until the peer leaves, breaks a limit or is aborted, or until
        cancelled (the bus leaving); then sends what is queued, BYE last if
        we said it (bounded: see ``_leaving``), closes the socket and reports
        the end to the handler.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                nursery.start_soon(watch_session, self, self.options)
                with self._reader_scope:
                    await self._read()
                nursery.cancel_scope.cancel()
        except Exception:
            # One peer's connection must never take the bus down with it.
            logger.exception("%s: unexpected error, connection dropped", self.peer)
        except BaseException:
            # Cancelled from outside (the bus is leaving: this may run before
            # the bus queued its BYEs), or KeyboardInterrupt landing in this
            # task: either way we leave, and the peer is told.
            self.conn.send_bye()
            raise
        finally:
            if not self.closing:
                self.close()
            for pending in self._pings.values():
                pending.answered.set()
            self._pings.clear()
            self.writer_idle = False  # nothing may write to the socket now
            stop_timeout, leave_timeout = self.options.stop_timeout, self.options.leave_timeout
            await flush_and_close(self.sock, self.out, stop_timeout, leave_timeout, self.peer)
            self.flushed.set()
            self.drained.unpark_all()
            self.handler.session_ended(self)

    async def _read(self) -> None:
        conn, sock, dispatch = self.conn, self.sock, self.handler.dispatch
        receive_data, out = conn.receive_data, conn.outgoing
        reads = 0
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                reads = 0
                await self._wait_readable()
                continue
            except OSError as exc:
                logger.info("%s: connection lost: %s", self.peer, exc)
                self.end_reason = self.end_reason or f"connection lost: {exc}"
                return
            self.reads += 1
            if not data:
                self.end_reason = self.end_reason or "connection closed by the peer"
            events = receive_data(data)
            if out and self.writer_idle:  # replies (PONG, ERROR) were queued
                self.wake_writer()
            if not await dispatch(self, events) or not data:
                return
            if conn.replies_queued - self._replies_mark > self.output_limit:
                # Its lines alone made us answer past its limit since its
                # output was last empty: read no more of them until it takes
                # what is queued (a peer that floods PINGs and never reads
                # costs one read's replies). Our own MSGs never pause the
                # reader: two agents flooding each other must not deadlock.
                await self._wait_drained()
                self._replies_mark = conn.replies_queued
            if len(data) < RECEIVE_SIZE:
                # The kernel had no more: wait rather than try a read that
                # would fail (an exception and a syscall per wake-up).
                reads = 0
                await self._wait_readable()
                continue
            reads += 1
            if reads >= READS_PER_CHECKPOINT:
                reads = 0
                await trio.lowlevel.checkpoint()

    async def _wait_readable(self) -> None:
        self.waiting_for_peer = True
        try:
            await trio.lowlevel.wait_readable(self.sock)
        finally:
            self.waiting_for_peer = False

    async def _wait_drained(self) -> None:
        self.drained_below = self.output_limit
        while len(self.conn.outgoing) > self.output_limit and not self.closing:
            await self.drained.park()

    async def _write(self) -> None:
        """Send the output whenever it has something, until closing."""
        sock, out = self.sock, self.conn.outgoing
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
                    self.write_stalls += 1
                    # Over its limit, sends may be waiting for it: a peer
                    # that takes nothing for stall_timeout is let go.
                    if not await wait_taking(sock, self.options.stall_timeout, self._over_limit):
                        self._stalled(len(out))
                        out.clear()
                        return
                    self.drains += 1
                    continue
                del out[:sent]
                if not out:
                    self.congested = False
                    self._replies_mark = self.conn.replies_queued
                if self.drained and len(out) <= self.drained_below:
                    self.drained.unpark_all()
        except OSError as exc:
            logger.info("%s: connection lost while sending: %s", self.peer, exc)
            out.clear()
            self.abort(f"connection lost: {exc}")
        finally:
            self.drained.unpark_all()

    def _over_limit(self) -> bool:
        return len(self.out) > self.output_limit

    def _stalled(self, queued: int) -> None:
        seconds = self.options.stall_timeout
        reason = f"took no byte for {seconds:g} s with {queued} bytes queued"
        self.log.warning("%s: %s, disconnecting", self.peer, reason)
        self.abort(reason)

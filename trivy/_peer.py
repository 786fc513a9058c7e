"""One peer, owned by one object: its socket, its protocol state and its tasks.

A :class:`PeerSession` reads the peer's bytes and hands them to its sans-IO
:class:`~trivy._connection.Connection`, and passes the resulting events to
the bus through the :class:`SessionHandler` it was given. Everything we say
to the peer goes through the session's methods: the connection checks and
encodes it, the session's :class:`~trivy._output.PeerOutput` writes it. It
knows nothing of the bus: what the events mean for the application is the
handler's business.

Sockets are plain non-blocking stdlib sockets driven with
``trio.lowlevel.wait_readable``/``wait_writable``: reads and writes are tried
at once and only wait when the kernel says so, which keeps the per-message
cost low.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from time import perf_counter
from types import MappingProxyType
from typing import Protocol

import trio

from ._connection import Connection
from ._events import Peer
from ._fairness import SERVE_SLICE, shared_slice
from ._liveness import configure_keepalive, watch_session
from ._logs import LogLimiter
from ._options import BusOptions
from ._output import PeerOutput, SendPace
from ._pings import Pings
from ._protocol_events import Event, RegexpRejected

__all__ = ["PeerSession", "SessionHandler"]

logger = logging.getLogger("trivy")

#: Bytes asked of the kernel per read (8 KiB of the costliest lines to
#: parse, PINGs, take about 2 ms), and by a reader that waited its turn for
#: several passes (1 KiB: a quarter of a ms).
RECEIVE_SIZE = 8 * 1024
SMALL_RECEIVE_SIZE = 1024


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
      log: this connection's share of the logs (its source host's budget
        within: :class:`~trivy._logs.SourceLogs`); its own if None.

    Attributes:
      peer: who it is (its name and port once its START_REGEXP arrived).
      output: the writer of its socket.
      queue_msg: queue one MSG if the peer has room: the connection's
        :meth:`~trivy._connection.Connection.send_msg_payload`, the
        router's one call per subscriber of a text.
      pings: our PINGs to it and their PONGs.
      closing: whether we stopped taking output for the peer (BYE said,
        or dropped); read-only (a plain attribute: the dispatcher reads it
        once per read, and a property is a call CPython 3.11 does not
        specialize).
      local_address, remote_address: (address, port) of each end.
      log: this peer's share of the logs (rate-limited).

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
        log: LogLimiter | None = None,
        pace: SendPace | None = None,
    ) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        configure_keepalive(sock, options.dead_host_timeout)
        self.local_address: tuple[str, int] = sock.getsockname()[:2]
        self.remote_address: tuple[str, int] = sock.getpeername()[:2]
        self._sock = sock
        self._conn = conn
        self._handler = handler
        self._options = options
        self.log = LogLimiter(logger) if log is None else log
        self.peer = Peer(
            name="",
            host=host,
            port=announced_port,
            agent_id=agent_id,
            subscriptions=MappingProxyType(conn.subscriptions),  # a live, read-only view
        )
        self.output = PeerOutput(sock, conn, self.peer, options.stall_timeout, pace)
        self.queue_msg = conn.send_msg_payload
        self._became_ready = trio.Event()
        self._identified_at: float | None = None
        self.closing = False
        self._end_reason = ""
        self._reads = 0
        self._waiting_for_peer = False
        self._replies_mark = 0  # conn.replies_queued when the reader last had room
        self._reader_scope = trio.CancelScope()
        self._watch_scope = trio.CancelScope()
        self.pings = Pings(conn, self.output.flush_soon, self.peer)
        #: Set once the socket is closed and the end reported.
        self.ended = trio.Event()

    def __repr__(self) -> str:
        return f"<PeerSession {self.peer}>"

    # ----------------------------------------------------------------- state
    @property
    def ready(self) -> bool:
        """Whether the peer's handshake is complete."""
        return self._became_ready.is_set()

    @property
    def identified_at(self) -> float | None:
        """When its START_REGEXP arrived (trio time), for duplicate resolution."""
        return self._identified_at

    @property
    def end_reason(self) -> str:
        """Why the connection ended (reported in PeerDisconnected)."""
        return self._end_reason

    @property
    def activity(self) -> int:
        """Grows whenever the peer is heard from: a read, or room made in its buffer."""
        return self._reads + self.output.drains

    @property
    def waiting_for_peer(self) -> bool:
        """Whether the reader now waits for the peer's next bytes."""
        return self._waiting_for_peer

    def identify(self, name: str, port: int) -> None:
        """The peer's START_REGEXP arrived: it is ``name``, listening on ``port``."""
        self.peer.name, self.peer.port = name, port
        self._identified_at = trio.current_time()

    def mark_ready(self) -> None:
        """The peer's handshake is complete."""
        self._became_ready.set()

    async def wait_ready(self) -> None:
        """Return once the peer's handshake is complete."""
        await self._became_ready.wait()

    def note_end(self, reason: str) -> None:
        """Why the connection ends, unless a reason was given already."""
        self._end_reason = self._end_reason or reason

    # ---------------------------------------------------------------- output
    def send_handshake(self, port: int, agent_name: str, subs: bytes) -> None:
        """Our START_REGEXP, our regexps' ADD_REGEXP lines, END_REGEXP."""
        self._conn.send_handshake(port, agent_name, subs)
        self.output.flush_soon()

    def send_subscription(self, sub_id: int, regexp: str) -> None:
        """ADD_REGEXP (nothing once closing: the peer is being left)."""
        if not self.closing:
            self._conn.send_subscription(sub_id, regexp)
            self.output.flush_soon()

    def send_unsubscription(self, sub_id: int) -> None:
        """DEL_REGEXP (nothing once closing)."""
        if not self.closing:
            self._conn.send_unsubscription(sub_id)
            self.output.flush_soon()

    def send_direct(self, num_id: int, text: str) -> bool:
        """DIRECT_MSG, if the peer has room (the connection's ``has_room``); whether queued."""
        return self._flushed(self._conn.send_direct(num_id, text))

    def send_error(self, num_id: int, text: str) -> bool:
        """ERROR, if the peer has room; whether it was queued."""
        return self._flushed(self._conn.send_error(num_id, text))

    def send_die(self, num_id: int = 0) -> bool:
        """DIE, if the peer has room; whether it was queued."""
        return self._flushed(self._conn.send_die(num_id))

    def send_raw(self, msg_type: int, num_id: int, params: str | Sequence[str] = "") -> bool:
        """Any protocol message, as it is (:func:`trivy.protocol.encode`), if the peer has room."""
        return self._flushed(self._conn.send_raw(msg_type, num_id, params))

    def _flushed(self, queued: bool) -> bool:
        self.output.flush_soon()  # (it looks: nothing to do if nothing was queued)
        return queued

    def reject_regexp(
        self, sub_id: int, regexp: str, reason: str, offset: int = 0
    ) -> RegexpRejected:
        """Refuse the peer's regexp ``sub_id``: forget it, send ivy-c's ERROR."""
        rejected = self._conn.reject_regexp(sub_id, regexp, reason, offset)
        self.output.flush_soon()
        return rejected

    def answer_ping(self, num_id: int) -> None:
        """PONG to the peer's PING (the reader flushes replies after its events)."""
        self._conn.send_pong(num_id)

    def reject_duplicate(self) -> None:
        """Tell the peer this connection is a duplicate, and end it."""
        self._conn.reject_duplicate()
        self.abort()

    # ------------------------------------------------------------------ memory
    @property
    def bytes_held(self) -> int:
        """Bytes held for the peer: queued, unsent, and its unfinished line."""
        return self._conn.bytes_held

    def limit_memory(self, send_limit: int, max_line_length: int, max_excess: int) -> None:
        """The peer's share of the memory bound (see ``_memory_shares``)."""
        self._conn.limit_memory(send_limit, max_line_length, max_excess)

    # ---------------------------------------------------------------- liveness
    def send_heartbeat(self) -> None:
        """PING for the heartbeat: at most one of these stays unanswered."""
        self.pings.heartbeat()

    def report_unresponsive(self, silent_for: float) -> None:
        """Tell the handler the peer has been silent for ``silent_for`` seconds."""
        self._handler.session_unresponsive(self, silent_for)

    def report_responsive(self) -> None:
        """Tell the handler the silent peer spoke again."""
        self._handler.session_responsive(self)

    # ------------------------------------------------------------------- end
    def close(self) -> None:
        """Send what is queued, then stop; nothing new is routed here."""
        if not self.closing:
            self.closing = True
            self._watch_scope.cancel()
            self.output.close()
            self._handler.session_closing(self)

    def say_bye(self) -> None:
        """Queue BYE after what is queued, then close."""
        self._conn.send_bye()
        self.output.flush_soon()
        self.close()

    def abort(self, reason: str = "") -> None:
        """Stop reading now; send what is queued, then close."""
        if reason:
            self.note_end(reason)
        self.close()
        self._reader_scope.cancel()

    # ----------------------------------------------------------------- tasks
    async def run(self) -> None:
        """Serve the peer until either side ends the connection.

        The writer task sends what is queued; a third task watches the
        peer's liveness (handshake deadline, heartbeat: see ``_liveness``).
        An error in the peer's handling is logged, never raised: one peer
        cannot take the bus down.

        Reads until the peer leaves, breaks a limit or is aborted, or until
        cancelled (the bus leaving); then the output sends what is queued,
        BYE last if we said it (bounded: see :meth:`PeerOutput.leave`), the
        socket is closed and the end reported to the handler.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                nursery.start_soon(self._watch)
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
            self._conn.send_bye()
            raise
        finally:
            self.close()
            self.pings.fail_all()
            try:
                await self.output.leave(self._options.stop_timeout, self._options.leave_timeout)
            finally:  # (Ctrl-C may land in leave: the bus still forgets the peer)
                self.ended.set()
                self._handler.session_ended(self)

    async def _write(self) -> None:
        reason = await self.output.run_writer(self._options.stall_timeout)
        if reason.startswith("connection lost"):
            self.log.info("%s: %s while sending", self.peer, reason)
        else:
            self.log.warning("%s: %s, disconnecting", self.peer, reason)
        self.abort(reason)

    async def _watch(self) -> None:
        with self._watch_scope:
            await watch_session(self, self._options)

    async def _read(self) -> None:
        conn, sock, dispatch = self._conn, self._sock, self._handler.dispatch
        receive_data, output = conn.receive_data, self.output
        wait_readable = trio.lowlevel.wait_readable
        limit = self._options.send_buffer_limit
        share = shared_slice()  # (the loop's time, shared with every other reader)
        size = RECEIVE_SIZE
        while True:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                data = None
            except OSError as exc:
                self.log.info("%s: connection lost: %s", self.peer, exc)
                self.note_end(f"connection lost: {exc}")
                return
            if data is not None:
                self._reads += 1
                if not data:
                    self.note_end("connection closed by the peer")
                events = receive_data(data)
                if not await dispatch(self, events) or not data:
                    return
                del events  # (what it held is delivered, or dropped: not kept while waiting)
                # Replies (PONG, ERROR) go once the lines before them were acted
                # on: a PONG tells the peer everything it sent before is handled.
                output.flush_soon()
                if conn.replies_queued - self._replies_mark > limit:
                    # Its lines alone made us answer past its limit since we
                    # last had room: read no more of them until it takes
                    # what is queued (a peer that floods PINGs and never
                    # reads costs one read's replies). Our own MSGs never
                    # pause the reader: two agents flooding each other must
                    # not deadlock.
                    await output.wait_for_room(sender=False)
                    self._replies_mark = conn.replies_queued
                if len(data) == size:  # the kernel may have more
                    size = RECEIVE_SIZE
                    if perf_counter() - share.started > SERVE_SLICE and not (
                        await share.yield_turn()
                    ):
                        size = SMALL_RECEIVE_SIZE
                    continue
                # A short read: the kernel had no more. Wait rather than try
                # a read that would fail (an exception and a syscall).
            # (inline, not a method: it runs once per message a lone peer sends)
            waited_at = share.ended = perf_counter()  # (SharedSlice.pause, inline)
            self._waiting_for_peer = True
            try:
                await wait_readable(sock)
            finally:
                self._waiting_for_peer = False
            now = perf_counter()  # (SharedSlice.resumed, inline as the wait is)
            size = RECEIVE_SIZE
            if share.started <= waited_at or now - share.ended > SERVE_SLICE:
                share.started = now  # the first loop of this pass to serve
            elif now - share.started > SERVE_SLICE and not await share.yield_turn():
                size = SMALL_RECEIVE_SIZE

"""One peer's output: the bytes its connection queued, on their way to the socket.

A :class:`PeerOutput` is the one writer of a peer's socket. It takes what
the sans-IO connection queued (:meth:`OutputSource.data_to_send`) and keeps
what the kernel did not take yet, telling the connection how much that is
(``bytes_unsent``): the connection counts both against the peer's limit
when the router queues a MSG. Three ways out, one loop
(:meth:`PeerOutput._send_queued`):

- a lone message to an idle peer is written at once by the caller's task
  (the connection calls the output back when it queues a MSG while the
  writer waits), which saves a task switch per message;
- otherwise the writer task (:meth:`PeerOutput.run_writer`) sends whatever
  is queued, many messages per ``send`` call, and lets go of a peer that
  takes no byte for ``stall_timeout`` while over its limit;
- on leaving (:meth:`PeerOutput.leave`), the rest goes out under a shield,
  as long as the peer keeps taking it, within ``leave_timeout``.

Tasks that must not queue more for a full peer wait in
:meth:`PeerOutput.wait_for_room`: a waiting ``send``, and the reader of a
peer whose own lines made us answer past its limit. The time they wait is
charged to the peer (:class:`~trivy._patience.Patience`): one that keeps
them waiting too long in all, whatever trickle it reads, is let go. Past
their patience with all the peers, a peer they would wait for is excused:
its MSGs over the limit refused until it takes all it has.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from contextlib import suppress
from time import perf_counter
from typing import Protocol

import trio

from ._leaving import close_socket, linger
from ._liveness import wait_taking
from ._logs import LogLimiter
from ._patience import Patience, SharedPatience

__all__ = ["DIRECT_WRITE_INTERVAL", "OutputSource", "PeerOutput", "SendPace"]

logger = logging.getLogger("trivy")
_log = LogLimiter(logger)

#: A message to an idle peer is written at once, without the writer task,
#: unless the bus finished sending its previous text less than this long
#: ago, or wrote directly to that peer less than this long ago (seconds):
#: then texts come in a burst, and the peer's writer coalesces them.
DIRECT_WRITE_INTERVAL = 50e-6


class SendPace:
    """Our sending, as every peer's output sees it: a lone text, or a burst?

    The router sets :attr:`ended` at the end of each send; a peer's output
    writes a MSG at once only if the previous send ended at least
    :data:`DIRECT_WRITE_INTERVAL` before (a plain attribute: both sides run
    once per message). Measured between sends, not per peer: a text to 16
    peers takes longer than the interval, and each peer's own last write
    would then always look old, so a fan-out burst went out one system call
    per MSG. The senders' patience with all the peers is kept here too.
    """

    __slots__ = ("ended", "patience")

    def __init__(self, patience: float = math.inf) -> None:
        #: ``perf_counter()`` when the bus last finished queuing a text.
        self.ended = 0.0
        #: The senders' patience with all the peers together (seconds).
        self.patience = SharedPatience(patience)


class OutputSource(Protocol):
    """Where the bytes come from (a :class:`~trivy._connection.Connection`)."""

    #: Bytes not handed out yet...
    bytes_queued: int
    #: ...bytes handed out and not written yet (kept up to date here)...
    bytes_unsent: int
    #: ...and the limit on both.
    send_limit: int
    #: Whether MSGs over the limit are refused even for a waiting sender.
    excused: bool
    #: Called when a MSG is queued while the writer waits for bytes.
    wake_output: Callable[[int], None] | None

    def data_to_send(self) -> bytearray:
        """Hand out every queued byte."""


def _always() -> bool:
    return True


class PeerOutput:
    """The writer of one peer's socket (see the module docstring).

    Args:
      sock: the peer's non-blocking socket.
      source: the connection whose queued bytes go out, and whose
        ``send_limit`` bounds them.
      name: names the peer in the log.
      patience: seconds the peer may keep tasks waiting for room, in all
        lately (:class:`~trivy._patience.Patience`), before the writer lets
        it go.
    """

    def __init__(
        self,
        sock: socket.socket,
        source: OutputSource,
        name: object,
        patience: float,
        pace: SendPace | None = None,
    ) -> None:
        self._sock = sock
        self._pace = SendPace() if pace is None else pace
        self._source = source
        self._name = name
        #: Bytes taken from the source that the kernel did not take yet
        #: (``source.bytes_unsent`` says how many).
        self._sending = bytearray()
        self._writer_idle = False  # the writer waits for bytes
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._senders_waiting = 0  # ...of which senders
        self._shared = self._pace.patience
        self._patience = Patience(patience)
        self._charged = False  # excused and over its limit: charged as if waited for
        self._taken = 0  # bytes the kernel took, in all
        self._out_of_patience = ""  # why the writer must let the peer go
        # Entered only while the writer waits for a full socket: the one
        # wait out of patience must end (no cancel scope per message).
        self._stall_scope: trio.CancelScope | None = None
        self._open = True  # false once closed: nothing waits for room any more
        self._last_direct_write = 0.0
        self._congested = False
        #: Bytes of MSGs refused since the peer was last under its limit...
        self.dropped_bytes = 0
        #: ...times the kernel's buffer was full, and times the peer then
        #: made room again (the heartbeat's sign that a busy peer reads).
        self.write_stalls = 0
        self.drains = 0

    @property
    def size(self) -> int:
        """Bytes queued for the peer and not yet taken by the kernel."""
        return self._source.bytes_unsent + self._source.bytes_queued

    def over_limit(self) -> bool:
        """Whether more than the source's ``send_limit`` bytes wait for the peer."""
        source = self._source
        return source.bytes_unsent + source.bytes_queued > source.send_limit

    # ------------------------------------------------------------ queueing
    def _queued_to_idle_writer(self, queued_before: int) -> None:
        """The connection queued a MSG while the writer waits for bytes."""
        now = perf_counter()
        if (
            not queued_before
            and now - self._last_direct_write > DIRECT_WRITE_INTERVAL
            and now - self._pace.ended >= DIRECT_WRITE_INTERVAL  # (not in a burst)
        ):
            self._write_now(now)  # a lone message to an idle peer
        else:
            self._wake()

    def flush_soon(self) -> None:
        """Have the writer send what is queued."""
        if self._writer_idle and self._source.bytes_queued:
            self._wake()

    def _idle(self) -> None:
        self._writer_idle = True
        self._source.wake_output = self._queued_to_idle_writer

    def _wake(self) -> None:
        self._writer_idle = False
        self._source.wake_output = None
        self._wake_writer.unpark()

    def _write_now(self, now: float) -> None:
        """Write the queued bytes from the caller's task; the writer takes the rest."""
        self._last_direct_write = now
        source = self._source
        data = self._sending = source.data_to_send()
        try:
            sent = self._sock.send(data)
        except OSError:  # full, or broken: the writer task deals with it
            sent = 0
        self._taken += sent
        del data[:sent]
        if data:
            source.bytes_unsent = len(data)
            self._wake()

    def record_drop(self, size: int) -> bool:
        """Count a refused MSG; True when it starts an episode of congestion.

        An episode lasts until the output is empty again: it is reported once.
        An excused peer whose own patience ran out meanwhile is let go.
        """
        self.dropped_bytes += size
        started, self._congested = not self._congested, True
        if self._source.excused:  # (over its limit, then: charged again)
            now = trio.current_time()
            self._charge(True, now)
            if now >= self._patience.runs_out_at():
                budget = self._patience.budget
                self.let_go(f"kept over its limit {budget:g} s in all, lately, taking a trickle")
        return started

    def _charge(self, charged: bool, now: float) -> None:
        """Charge the excused peer as if waited for (over its limit), or stop."""
        if charged != self._charged:
            self._charged = charged
            patience = self._patience
            (patience.add_waiter if charged else patience.remove_waiter)(now)

    async def wait_for_room(self, *, sender: bool = True) -> None:
        """Wait until at most ``limit`` bytes are queued, or the output is closed.

        The wait is charged to the peer: once it has kept tasks waiting for
        its patience in all (lately), the writer lets it go and every wait
        ends. A ``sender``'s wait also counts in the senders' patience with
        all the peers (not the peer's own reader's: a peer that floods PINGs
        and never reads their PONGs makes no sender wait); when that runs
        out, the wait ends and the peer is excused (see
        :class:`~trivy._patience.SharedPatience`).
        """
        if not (self._open and self.over_limit()):
            return
        patience, shared = self._patience, self._shared
        now = trio.current_time()
        patience.add_waiter(now)
        if sender:
            if not self._senders_waiting:
                shared.start_waiting(self, now)
            self._senders_waiting += 1
        try:
            own_end = patience.runs_out_at()
            shared_end = shared.runs_out_at() if sender else math.inf
            with trio.move_on_at(min(own_end, shared_end)):
                while self._open and self.over_limit():
                    await self._room.park()
                return
            if trio.current_time() >= own_end:
                budget = patience.budget
                self.let_go(f"kept our senders waiting {budget:g} s over its limit, lately")
                return
            # The senders' patience with all the peers ran out: this peer's
            # lag may be none of its fault. Nobody waits for it until it
            # takes all it has, if still over its limit after its writer's
            # turn (a sender that did not yield yet is no fault of its).
            # (what another sender queued meanwhile is no fault of its either)
            before, taken = self.size, self._taken
            await trio.lowlevel.cancel_shielded_checkpoint()
            left = before - (self._taken - taken)
            if self._open and left > self._source.send_limit and self.over_limit():
                self._source.excused = True  # (and its own account runs on:)
                self._charge(True, trio.current_time())
        finally:
            now = trio.current_time()
            patience.remove_waiter(now)
            if sender:
                self._senders_waiting -= 1
                if not self._senders_waiting:
                    shared.stop_waiting(self, now)

    def let_go(self, reason: str) -> None:
        """Have the writer let the peer go (``reason`` ends its connection)."""
        if self._out_of_patience:
            return
        self._out_of_patience = reason
        self._shared.stop_waiting(self, trio.current_time())
        if self._stall_scope is not None:
            self._stall_scope.cancel()
        elif self._writer_idle:
            self._wake()

    # ------------------------------------------------------------- writing
    async def _send_queued(self, stall_timeout: float, *, judged: bool) -> bool:
        """Send until nothing is queued (bytes queued meanwhile included).

        Returns False when the peer takes no byte for ``stall_timeout``
        seconds; while ``judged`` is False, only when it does so over its
        limit (a peer under it may read at its own pace).

        Raises:
          OSError: the connection broke.
        """
        sock, source = self._sock, self._source
        over_limit = _always if judged else self.over_limit
        while True:
            data = self._sending
            if source.bytes_queued:
                if data:
                    data += source.data_to_send()
                else:
                    data = self._sending = source.data_to_send()
            elif not data:
                return True
            source.bytes_unsent = len(data)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                self.write_stalls += 1
                taken = False
                with trio.CancelScope() as self._stall_scope:
                    if not self._out_of_patience:
                        taken = await wait_taking(sock, stall_timeout, over_limit)
                self._stall_scope = None
                if not taken:
                    return False
                self.drains += 1
                continue
            self._taken += sent
            del data[:sent]
            source.bytes_unsent = len(data)
            if not data and not source.bytes_queued:
                self._congested = source.excused = False  # (senders wait for it again)
            if self._charged and not self.over_limit():  # (under its limit: not charged)
                self._charge(False, trio.current_time())
            if self._room and not self.over_limit():
                self._room.unpark_all()

    async def run_writer(self, stall_timeout: float) -> str:
        """The writer task: send what is queued, whenever there is some.

        Returns why it stopped, when the peer stopped taking bytes while
        over its limit, kept tasks waiting for room too long (see
        :meth:`wait_for_room`) or the connection broke (what is queued is
        then dropped); runs until cancelled otherwise.
        """
        try:
            while True:
                sent = await self._send_queued(stall_timeout, judged=False)
                if self._out_of_patience:  # (wait_for_room ended our wait)
                    return f"{self._out_of_patience} ({self.discard()} bytes queued)"
                if not sent:
                    queued = self.discard()
                    return f"took no byte for {stall_timeout:g} s with {queued} bytes queued"
                self._idle()
                await self._wake_writer.park()
        except OSError as exc:
            self.discard()
            return f"connection lost: {exc}"
        finally:
            self._writer_idle = False
            self._source.wake_output = None

    def discard(self) -> int:
        """Drop whatever is queued; returns how many bytes that was."""
        queued = self.size
        self._sending = bytearray()
        self._source.bytes_unsent = 0
        self._source.data_to_send()
        self._room.unpark_all()
        return queued

    def close(self) -> None:
        """Stop the waits for room: the peer is leaving (its bytes may still go)."""
        self._open = False
        self._shared.stop_waiting(self, trio.current_time())
        self._writer_idle = False  # no more direct writes
        self._source.wake_output = None
        self._room.unpark_all()

    async def leave(self, stop_timeout: float, leave_timeout: float) -> int:
        """Send the rest (BYE last, when queued), then close the socket.

        Goes on while the peer takes some bytes every ``stop_timeout``
        seconds, never past ``leave_timeout``; cancellation from outside does
        not shorten it (that is what bounds it). The writer task must be over.

        Returns:
          the bytes left unsent.
        """
        self.close()
        deadline = trio.current_time() + leave_timeout
        try:
            # (an OSError: the connection broke, nothing more will reach the peer)
            with trio.CancelScope(shield=True, deadline=deadline), suppress(OSError):
                await self._send_queued(stop_timeout, judged=True)
            unsent = self.discard()
            if unsent:  # (a flood of connections that never read: rate-limited)
                _log.warning(
                    "%s: leaving with %d bytes unsent: the peer stopped reading", self._name, unsent
                )
            else:  # (a peer that stopped taking will not take the rest)
                with trio.CancelScope(shield=True, deadline=deadline):
                    await linger(self._sock, stop_timeout)
        finally:  # (even when Ctrl-C lands here: the descriptor is not left open)
            close_socket(self._sock)
        return unsent

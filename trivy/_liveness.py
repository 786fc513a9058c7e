"""Whether a peer is still there: handshake deadline, heartbeat, kernel timers.

Ivy agents announce themselves once: a connection that drops is never made
again. So a dead peer must be noticed, and a live one never dropped
lightly. Three watches, each for a different way of going away:

- a connection that never completes its handshake is closed after
  ``handshake_timeout``;
- a peer's *host* that vanishes (cable out, power off: no FIN, no RST) is
  noticed by the kernel: TCP keepalive probes an idle connection, and
  ``TCP_USER_TIMEOUT`` ends one whose data (or probes) stay unacknowledged
  for ``dead_host_timeout``;
- a peer whose *process* is frozen or stuck still has its kernel
  acknowledge everything: only the application can tell. A peer silent for
  ``heartbeat_interval`` is sent a PING; one silent (no byte, no PONG) for
  ``unresponsive_timeout`` is reported, and dropped if the options say so.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import sys
from collections.abc import Callable
from typing import Protocol

import trio

from ._logs import LogLimiter
from ._options import BusOptions

if sys.platform == "linux":
    from fcntl import ioctl
else:  # pragma: no cover
    ioctl = None

#: Linux's ioctl for the bytes of a TCP send queue not yet sent at all.
SIOCOUTQNSD = 0x894B

__all__ = ["Watched", "configure_keepalive", "wait_taking", "watch_session"]

logger = logging.getLogger("trivy")

#: Keepalive probes start after this many idle seconds, one every
#: KEEPALIVE_INTERVAL; the kernel gives up after ``dead_host_timeout``.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 5
#: Longest dead_host_timeout applied (a day); longer ones are clamped.
MAX_DEAD_HOST_TIMEOUT = 86_400


def configure_keepalive(sock: socket.socket, dead_host_timeout: float) -> None:
    """Have the kernel end the connection once the peer's host is gone.

    Uses what the system has (Linux has all three options; others may lack
    ``TCP_USER_TIMEOUT`` or the keepalive timers, and keep their defaults).
    """
    if math.isinf(dead_host_timeout):
        return
    seconds = max(1, min(math.ceil(dead_host_timeout), MAX_DEAD_HOST_TIMEOUT))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = min(KEEPALIVE_IDLE, seconds)
    # Linux takes at most 127 probes: longer timeouts probe less often.
    interval = max(min(KEEPALIVE_INTERVAL, seconds), math.ceil((seconds - idle) / 127))
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", max(1, min(127, (seconds - idle) // interval))),
        ("TCP_USER_TIMEOUT", seconds * 1000),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError as exc:  # a system that refuses it keeps its default
                logger.debug("cannot set %s=%d: %s", name, value, exc)


#: Linux's ioctl for the bytes of a TCP send queue not yet acknowledged
#: (SIOCOUTQ, which shares its number with the terminal's TIOCOUTQ).
SIOCOUTQ = 0x5411


def unacknowledged(sock: socket.socket) -> int:
    """Bytes we sent or queued that the peer has not acknowledged; -1 if unknown."""
    return _queue_size(sock, SIOCOUTQ)


def unsent(sock: socket.socket) -> int:
    """Bytes in the kernel's send queue not yet sent; -1 if the system cannot tell.

    It shrinks only when the peer's window opens, that is when the peer
    reads (acknowledgements of bytes already sent do not count).
    """
    return _queue_size(sock, SIOCOUTQNSD)


def _queue_size(sock: socket.socket, request: int) -> int:
    if ioctl is None:  # pragma: no cover
        return -1
    try:
        raw = ioctl(sock.fileno(), request, b"\0\0\0\0")
    except OSError:
        return -1
    queued: int = struct.unpack("i", raw)[0]
    return queued


async def wait_taking(
    sock: socket.socket, stall_timeout: float, over_limit: Callable[[], bool]
) -> bool:
    """Wait until ``sock`` is writable; False once the peer stalls while ``over_limit()``.

    The kernel reports a socket writable only once a good part of its send
    buffer is free, which a peer that reads slowly may take long to allow:
    so every ``stall_timeout`` the send queue is measured, and any byte the
    peer made room for counts as progress. (Where the system cannot tell, a
    ``stall_timeout`` without writability counts as a stall.)
    """
    queued = unsent(sock)
    while True:
        with trio.move_on_after(stall_timeout):
            await trio.lowlevel.wait_writable(sock)
            return True
        now_queued = unsent(sock)
        if over_limit() and not 0 <= now_queued < queued:
            return False
        queued = now_queued


class Watched(Protocol):
    """What the watch needs of a peer's session (a :class:`~trivy._peer.PeerSession`)."""

    log: LogLimiter

    @property
    def peer(self) -> object:
        """Names the peer in the log."""

    @property
    def ready(self) -> bool:
        """Whether the handshake is complete."""

    @property
    def activity(self) -> int:
        """Grows whenever the peer is heard from (a read, room made in its buffer)."""

    @property
    def waiting_for_peer(self) -> bool:
        """Whether the reader now waits for the peer's next bytes."""

    async def wait_ready(self) -> None:
        """Return once the handshake is complete."""

    def abort(self, reason: str = "") -> None:
        """End the connection."""

    def send_heartbeat(self) -> None:
        """PING the peer, forgetting the previous heartbeat's PING."""

    def report_unresponsive(self, silent_for: float) -> None:
        """Tell the bus the peer has been silent for ``silent_for`` seconds."""

    def report_responsive(self) -> None:
        """Tell the bus the peer reported unresponsive spoke again."""


async def watch_session(session: Watched, options: BusOptions) -> None:
    """The handshake deadline, then the heartbeat, for one session's life.

    The session cancels it when it closes.
    """
    with trio.move_on_after(options.handshake_timeout):
        await session.wait_ready()
    if not session.ready:
        reason = f"no handshake within {options.handshake_timeout:g} s"
        session.log.warning("%s: %s, disconnecting", session.peer, reason)
        session.abort(reason)
        return
    if not math.isinf(options.heartbeat_interval):
        await _heartbeat(session, options)


async def _heartbeat(session: Watched, options: BusOptions) -> None:
    """PING a silent peer; report (or drop) one that stays silent.

    Silence is measured in whole heartbeats: the session's activity counts
    its reads and the times a full peer made room again (it read: a busy
    peer working through a backlog, whose PONG waits behind it, is alive),
    and a heartbeat that finds the count unchanged while the reader was
    waiting for the peer counts as silent. (A reader that is busy or paused
    by our own backpressure is not waiting: its peer is not silent.)
    """
    interval = options.heartbeat_interval
    heard = session.activity
    silent_since = trio.current_time()
    unresponsive = False
    while True:
        due = trio.current_time() + interval
        await trio.sleep(interval)
        now = trio.current_time()
        # Woken a whole interval late: our own event loop was frozen (a
        # blocking callback), and the reader has not yet read what the peer
        # sent meanwhile. That silence is ours: start counting again.
        frozen = now - due > interval
        if frozen or session.activity != heard or not session.waiting_for_peer:
            heard = session.activity
            silent_since = now
            if unresponsive:
                unresponsive = False
                session.report_responsive()
            continue
        silent = now - silent_since
        if silent >= options.unresponsive_timeout and not unresponsive:
            unresponsive = True
            if options.drop_unresponsive:
                reason = f"silent for {silent:.0f} s"
                session.log.warning("%s: %s, disconnecting", session.peer, reason)
                session.abort(reason)
                return
            session.log.warning("%s: silent for %.0f s", session.peer, silent)
            session.report_unresponsive(silent)
        session.send_heartbeat()

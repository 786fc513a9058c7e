"""The last bytes of a connection: what is queued (BYE last) goes out, boundedly.

Whatever ends a session (the peer's BYE, a limit, our ``stop()``, a DIE,
an outer cancellation of ``open_ivy_bus``), its tasks are cancelled and
:func:`flush_and_close` runs under a shield: it writes the output itself,
so the farewell never depends on a writer task that was already cancelled.
A slow peer keeps getting bytes as long as it takes some every
``stop_timeout``; no peer holds the exit past ``leave_timeout``.
"""

from __future__ import annotations

import logging
import socket
from contextlib import suppress

import trio

from ._liveness import unacknowledged, wait_taking

__all__ = ["flush_and_close"]

logger = logging.getLogger("trivy")

#: While the kernel still holds bytes for the peer, how often we look.
LINGER_POLL = 0.05
#: Reads of what the peer sent that we discard before closing.
DISCARD_READS = 16


def _always() -> bool:
    return True


async def flush_and_close(
    sock: socket.socket,
    out: bytearray,
    stop_timeout: float,
    leave_timeout: float,
    name: object,
) -> int:
    """Send ``out`` on ``sock``, then close it; returns the bytes left unsent.

    Gives up when the peer takes no byte for ``stop_timeout`` seconds, and
    in any case after ``leave_timeout``; cancellation from outside does not
    shorten it (that is what bounds it). ``name`` names the peer in the log.
    """
    deadline = trio.current_time() + leave_timeout
    with trio.CancelScope(shield=True, deadline=deadline):
        while out:
            try:
                sent = sock.send(out)
            except BlockingIOError:
                if await wait_taking(sock, stop_timeout, _always):
                    continue
                break
            except OSError:
                out.clear()
                break
            del out[:sent]
    unsent = len(out)
    if unsent:
        logger.warning("%s: leaving with %d bytes unsent: the peer stopped reading", name, unsent)
        out.clear()
    if not unsent:  # (a peer that stopped taking will not take the rest)
        with trio.CancelScope(shield=True, deadline=deadline):
            await _linger(sock, stop_timeout)
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        for _ in range(DISCARD_READS):  # unread data would make close() send RST
            if not sock.recv(256 * 1024):
                break
    sock.close()
    return unsent


async def _linger(sock: socket.socket, stop_timeout: float) -> None:
    """Wait until the peer acknowledged everything, or closed, or stopped taking.

    Closing a socket while the kernel still holds bytes for the peer, if the
    peer then sends anything, makes the kernel answer with RST and throw
    those bytes (BYE among them) away. So we wait, reading and discarding
    what the peer sends, while the kernel's queue keeps shrinking.
    """
    queued = unacknowledged(sock)
    last_progress = trio.current_time()
    while queued > 0:
        try:
            if not sock.recv(256 * 1024):
                return  # the peer closed: nothing more will reach it
        except BlockingIOError:
            pass
        except OSError:
            return
        with trio.move_on_after(LINGER_POLL):
            await trio.lowlevel.wait_readable(sock)
        now_queued, now = unacknowledged(sock), trio.current_time()
        if now_queued < queued:
            last_progress = now
        elif now - last_progress >= stop_timeout:
            return
        queued = now_queued

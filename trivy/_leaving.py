"""The end of a connection, once its last bytes were written: linger, then close.

Whatever ends a session (the peer's BYE, a limit, our ``stop()``, a DIE,
an outer cancellation of ``open_ivy_bus``), its output sends what is
queued, BYE last (:meth:`~trivy._output.PeerOutput.leave`); then
:func:`linger` waits until the peer has it all, and :func:`close_socket`
closes without a reset.
"""

from __future__ import annotations

import logging
import socket
from contextlib import suppress

import trio

from ._liveness import unacknowledged

__all__ = ["close_socket", "linger"]

logger = logging.getLogger("trivy")

#: While the kernel still holds bytes for the peer, how often we look.
LINGER_POLL = 0.05
#: Reads of what the peer sent that we discard before closing.
DISCARD_READS = 16


def close_socket(sock: socket.socket) -> None:
    """Shut down our side, discard what the peer still sends, and close.

    Unread data in the kernel would make ``close()`` answer with RST, which
    can make the peer throw away our last bytes (BYE among them).
    """
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        for _ in range(DISCARD_READS):
            if not sock.recv(256 * 1024):
                break
    sock.close()


async def linger(sock: socket.socket, stop_timeout: float) -> None:
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

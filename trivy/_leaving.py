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

from ._liveness import wait_taking

__all__ = ["flush_and_close"]

logger = logging.getLogger("trivy")

#: Reads of what the peer sent that we discard before closing: closing a
#: socket with unread data makes the kernel send RST, and a peer that gets
#: RST may discard our last bytes (BYE) unread. Beyond this, close anyway.
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
    with trio.CancelScope(shield=True, deadline=trio.current_time() + leave_timeout):
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
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        for _ in range(DISCARD_READS):
            if not sock.recv(256 * 1024):
                break
    sock.close()
    return unsent

"""Hanging up on the pages when the monitor stops, written to or not.

The server (Hypercorn) writes to a page shielded from cancellation: a page
that reads nothing (a stalled tab, a laptop put to sleep with the page
open) would hold the monitor's exit until the kernel gives its connection
up (``TCP_USER_TIMEOUT``: 30 s). Nothing of the server's reaches its
connections from outside, so, when it stops, the monitor finds them among
the process's file descriptors, by the address they were accepted on, and
shuts them down: a write waiting on one then fails at once.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from typing import Any

__all__ = ["hang_up_pages"]

#: Where the process's open descriptors are listed (Linux; then BSD, macOS).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def hang_up_pages(listening: tuple[Any, ...]) -> int:
    """Shut down every TCP connection accepted on ``listening`` (the
    listener's ``getsockname()``); return how many.

    Only connections whose own address is the listener's (any address of
    its port, when it listens on every address) are touched: the bus's, or
    a client's of the same process, have other ports.
    """
    for fd_dir in _FD_DIRS:
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        return sum(_hang_up(int(name), listening) for name in names if name.isdigit())
    return 0


def _hang_up(fd: int, listening: tuple[Any, ...]) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        copy = socket.socket(fileno=os.dup(fd))  # (closing the copy leaves the server's)
    except OSError:  # (closed meanwhile, or not a socket Python knows)
        return False
    with copy:
        if copy.type != socket.SOCK_STREAM or copy.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        try:
            own = copy.getsockname()
            copy.getpeername()  # (a listener has no peer: not one of the pages)
        except OSError:
            return False
        if not _accepted_on(own, listening):
            return False
        try:
            copy.shutdown(socket.SHUT_RDWR)  # (the connection's, not the descriptor's)
        except OSError:
            return False
    return True


def _accepted_on(own: tuple[Any, ...], listening: tuple[Any, ...]) -> bool:
    if own[1] != listening[1]:
        return False
    where = ipaddress.ip_address(listening[0].split("%")[0])
    return where.is_unspecified or ipaddress.ip_address(own[0].split("%")[0]) == where

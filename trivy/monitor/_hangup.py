"""Hanging up on the pages when the monitor stops, written to or not.

The server (Hypercorn) writes to a page shielded from cancellation: a page
that reads nothing (a stalled tab, a laptop put to sleep with the page
open) would hold the monitor's exit until the kernel gives its connection
up (``TCP_USER_TIMEOUT``: 30 s). Nothing of the server's reaches its
connections from outside, so, when it stops, the monitor finds them among
the process's descriptors, by the address they were accepted on, and
shuts them down: a write waiting on one then fails at once.

On Linux the kernel's table of TCP connections says which of them were
accepted on that address (by inode), so no other descriptor of the
process is touched: making a socket object of one would set it
non-blocking under ``socket.setdefaulttimeout`` (the flag is its file's,
shared with its owner). Elsewhere each socket is asked its addresses, and
its flags are put back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

__all__ = ["DescriptorReserve", "hang_up_pages"]

#: The kernel's TCP tables (Linux), IPv4 then IPv6.
_TCP_TABLES = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}
#: A listening socket's state in them.
_LISTEN = "0A"


class DescriptorReserve:
    """A descriptor held from the start, given back when hanging up: with
    the process out of descriptors (a client holding hundreds of requests
    open), listing them and shutting pages down still have one."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._fd = None

    def release(self) -> None:
        """Give the descriptor back (once)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hang_up_pages(listening: tuple[Any, ...]) -> int:
    """Shut down every TCP connection accepted on ``listening`` (the
    listener's ``getsockname()``); return how many.

    Only connections whose own address is the listener's (any address of
    its family and port, when it listens on every address) are touched.
    """
    try:
        accepted = _accepted_inodes(listening)
    except OSError:  # (no such tables: ask each socket)
        return sum(_hang_up_if_ours(fd, listening) for fd in _descriptors())
    if not accepted:
        return 0
    return sum(_hang_up_inode(fd, accepted) for fd in _descriptors())


def _descriptors() -> Iterator[int]:
    for fd_dir in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        yield from (int(name) for name in names if name.isdigit())
        return


def _accepted_inodes(listening: tuple[Any, ...]) -> set[str]:
    """The inodes of the connections on ``listening``'s address, from the kernel's table."""
    family = socket.AF_INET6 if len(listening) == 4 else socket.AF_INET
    where = _address(listening[0])
    inodes = set()
    with open(_TCP_TABLES[family], encoding="ascii") as table:
        next(table)  # (the header)
        for row in table:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            address, port = local.split(":")
            if state == _LISTEN or int(port, 16) != listening[1]:
                continue
            if where.is_unspecified or _table_address(address) == where:
                inodes.add(inode)
    return inodes


def _table_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # (each 32-bit word in the host's order: little-endian on the machines Linux runs on)
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _hang_up_inode(fd: int, inodes: set[str]) -> bool:
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    if not (link.startswith("socket:[") and link[8:-1] in inodes):
        return False
    return _shut_down(fd)


def _shut_down(fd: int) -> bool:
    try:
        with socket.socket(fileno=os.dup(fd)) as copy:  # (closing the copy leaves the server's)
            copy.shutdown(socket.SHUT_RDWR)  # (the connection's, not the descriptor's)
    except OSError:
        return False
    return True


def _hang_up_if_ours(fd: int, listening: tuple[Any, ...]) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
    except OSError:
        return False
    with _flags_kept(fd):
        try:
            with socket.socket(fileno=os.dup(fd)) as copy:
                if copy.type != socket.SOCK_STREAM or copy.family != (
                    socket.AF_INET6 if len(listening) == 4 else socket.AF_INET
                ):
                    return False
                own = copy.getsockname()
                copy.getpeername()  # (a listener has no peer: not one of the pages)
                if own[1] != listening[1]:
                    return False
                where = _address(listening[0])
                if not (where.is_unspecified or _address(own[0]) == where):
                    return False
                copy.shutdown(socket.SHUT_RDWR)
        except OSError:  # (closed meanwhile, not connected, or not a socket Python knows)
            return False
    return True


@contextlib.contextmanager
def _flags_kept(fd: int) -> Iterator[None]:
    """Put back the descriptor's file flags (O_NONBLOCK) a socket object may change."""
    try:
        import fcntl
    except ImportError:  # (Windows: no such flags)
        yield
        return
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if fcntl.fcntl(fd, fcntl.F_GETFL) != flags:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%")[0])

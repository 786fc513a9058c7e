"""The sockets an agent opens: TCP listener, UDP discovery socket, outgoing TCP.

Plain non-blocking stdlib sockets, driven by ``trio.lowlevel.wait_readable``
and ``wait_writable`` in the bus: reads and writes are tried at once and wait
only when the kernel says so.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import trio

from .protocol import BusAddress, is_multicast

__all__ = ["connect_tcp", "open_discovery_socket", "open_listener"]

#: Pending connections the kernel queues for the listener.
LISTEN_BACKLOG = 128


@contextmanager
def _closed_unless_done(sock: socket.socket) -> Iterator[None]:
    """Close ``sock`` if the block does not finish (an error, a cancellation)."""
    done = False
    try:
        yield
        done = True
    finally:
        if not done:
            sock.close()


def open_listener(host: str) -> socket.socket:
    """A non-blocking TCP listener on an ephemeral port of ``host``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with _closed_unless_done(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    return sock


def open_discovery_socket(
    bus: BusAddress, multicast_ttl: int, multicast_interface: str | None, bind_to: str = ""
) -> socket.socket:
    """The UDP socket announces arrive on, shared by every agent of this host.

    Bound to the bus port (on ``bind_to``: every interface by default) with
    SO_REUSEADDR/SO_REUSEPORT and SO_BROADCAST;
    member of each multicast group of the bus, with multicast loopback on so
    agents of one host see each other.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with _closed_unless_done(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((bind_to, bus.port))
        interface = socket.inet_aton(multicast_interface or "0.0.0.0")
        for network in bus.networks:
            if not is_multicast(network):
                continue
            membership = socket.inet_aton(network) + interface
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            ttl = struct.pack("B", multicast_ttl)  # unsigned: 0..255
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            if multicast_interface:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
        sock.setblocking(False)
    return sock


async def connect_tcp(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to ``host:port``.

    Bound the wait with the caller's cancel scope (``trio.move_on_after``).

    Raises:
      OSError: refused or unreachable.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with _closed_unless_done(sock):  # refused, or cancelled while waiting
        sock.setblocking(False)
        with suppress(BlockingIOError):
            sock.connect((host, port))
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, f"cannot connect to {host}:{port}")
    return sock

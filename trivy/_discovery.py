"""Finding peers: the TCP listener, the UDP announces, outgoing connections.

An agent announces itself once on each network of the bus. Agents already
there answer by connecting to it; it, in turn, connects to every agent that
announces itself later. Both kinds of connection are handed to the bus,
which runs the protocol on them.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from . import protocol
from ._connect_queue import Attempt, ConnectQueue
from ._errors import IvyMalformedMessage
from ._fairness import TimeSlice
from ._logs import LogLimiter
from ._options import BusOptions, is_loopback
from ._sockets import connect_tcp, open_discovery_socket, open_listener
from .protocol import BusAddress

__all__ = ["CONNECT_TIMEOUT", "Discovery", "new_agent_id"]

logger = logging.getLogger("trivy")

#: Seconds allowed to connect to an announced agent: one lost SYN (resent
#: after 1 s) and a slow network's round trip, not the system's minutes. An
#: attempt holds a slot of the ConnectQueue meanwhile.
CONNECT_TIMEOUT = 3.0
#: After accept() or recvfrom() fails for want of resources (file
#: descriptors, memory), the socket waits this long before trying again (as
#: trio's own listeners do), rather than spinning on an error it cannot clear.
ACCEPT_RETRY_DELAY = 0.1


def _errnos(*names: str) -> frozenset[int]:
    """The errno values of these names that this platform defines."""
    return frozenset(getattr(errno, name) for name in names if hasattr(errno, name))


#: The system is out of something (trio's ACCEPT_CAPACITY_ERRNOS): it may
#: free it, so these are retried after ACCEPT_RETRY_DELAY.
RESOURCE_ERRNOS = _errnos("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
#: accept() failing for one connection only (reset or refused before we
#: took it, a firewall): trio's SocketListener retries these at once.
ACCEPT_IGNORABLE_ERRNOS = _errnos(
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
    "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
)  # fmt: skip
#: recvfrom() reporting an ICMP error about a datagram we sent earlier (an
#: announce to a port or network nobody answers on; Windows reports
#: ECONNRESET, or EMSGSIZE for a datagram cut short), or a firewall:
#: the next datagram is read at once.
UDP_IGNORABLE_ERRNOS = _errnos(
    "ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN",
    "ENONET", "ETIMEDOUT", "EPERM", "EMSGSIZE",
)  # fmt: skip
#: Distinct refused sources remembered (and logged once each); beyond, the
#: rest are refused silently.
MAX_REFUSED_LOGGED = 1024
#: Connections accepted before the accept loop lets the others run (each
#: starts a session, whose first steps run in the same scheduler pass).
ACCEPTS_PER_SLICE = 16
#: Largest UDP announce we read.
ANNOUNCE_SIZE = 1024

#: ``serve(sock, host, agent_id, port)``: runs a new peer connection until it
#: ends; whether it finished its handshake. ``agent_id`` and ``port`` come
#: from the announce (None and 0 for a connection we accepted).
ServeConnection = Callable[[socket.socket, str, "str | None", int], Awaitable[bool]]


def new_agent_id(port: int) -> str:
    """A bus-unique agent id: a token without spaces, as ivy-c makes them.

    Random bits, the time in ms and our TCP port: two agents of one host
    never share a port, and agents of different hosts differ by the rest.
    """
    return f"{random.getrandbits(31)}:{int(time.time() * 1000)}:{port}"


class Discovery:
    """The sockets by which peers find us and we find them.

    Args:
      options: the bus (networks and UDP port), the listener's address
        (``host``; a loopback host keeps the UDP socket on loopback too),
        multicast settings, the allowed peer networks and the refused peers.
      serve: runs each new connection (see :data:`ServeConnection`).
      is_connected: whether we already have a connection to the agent
        listening on ``(host, port)``.
    """

    def __init__(
        self,
        options: BusOptions,
        *,
        serve: ServeConnection,
        is_connected: Callable[[str, int], bool],
    ) -> None:
        self.bus: BusAddress = options.bus
        self._host = options.host
        self._multicast_ttl = options.multicast_ttl
        self._multicast_interface = options.multicast_interface
        self._allows = options.allows
        self._refuses = options.refuses
        self._refused: set[tuple[str, str]] = set()  # logged once each
        self._serve = serve
        self._is_connected = is_connected
        self._attempts = ConnectQueue()
        self._nursery: trio.Nursery | None = None
        #: Anyone who reaches the UDP port can make us log: rate-limited.
        self._log = LogLimiter(logger)
        self._listener: socket.socket | None = None
        self._udp: socket.socket | None = None
        self._agent_id = ""
        self._port = 0

    def open(self) -> int:
        """Open the listener and the UDP socket; returns the TCP port.

        Raises:
          OSError: a socket could not be opened (naming the UDP port if it
            is the one).
        """
        self._listener = open_listener(self._host)
        self._port = self._listener.getsockname()[1]
        try:
            # A loopback-only agent binds its UDP socket to the bus's loopback
            # address too (it gets broadcasts there), not to every interface;
            # with several, to all (and allows loopback sources alone).
            networks = set(self.bus.networks)
            loopback_alone = is_loopback(self._host) and len(networks) == 1
            bind_to = networks.pop() if loopback_alone else ""
            self._udp = open_discovery_socket(
                self.bus, self._multicast_ttl, self._multicast_interface, bind_to
            )
        except OSError as exc:
            self.close()
            raise OSError(
                exc.errno, f"cannot use UDP port {self.bus.port}: {exc.strerror}"
            ) from exc
        return self._port

    def start(self, nursery: trio.Nursery, agent_id: str, agent_name: str) -> None:
        """Start accepting and listening, then announce us (once)."""
        assert self._listener is not None and self._udp is not None, "open() first"
        self._agent_id = agent_id
        self._nursery = nursery
        nursery.start_soon(self._accept_loop, self._listener, nursery)
        nursery.start_soon(self._listen_loop, self._udp)
        announce = protocol.encode_announce(self._port, agent_id, agent_name)
        for network in self.bus.networks:
            try:
                self._udp.sendto(announce, (network, self.bus.port))
            except OSError as exc:
                logger.warning("cannot announce on %s:%d: %s", network, self.bus.port, exc)

    def close(self) -> None:
        """Close the sockets (the tasks using them must be over)."""
        for sock in (self._listener, self._udp):
            if sock is not None:
                sock.close()
        self._listener = self._udp = None

    async def _accept_loop(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        """Accept connections until cancelled.

        Errors are handled as trio's listeners do: one connection's failure
        is skipped, a lack of resources waits and retries, and anything else
        (the listener is broken: a bug) is raised.
        """
        # a connection flood must not hold the loop, nor start more sessions
        # at once than a slice of their work
        time_slice = TimeSlice(most=ACCEPTS_PER_SLICE)
        while True:
            await time_slice.share()
            try:
                sock, (host, _port) = listener.accept()
            except BlockingIOError:
                time_slice.waiting()
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._log.log(logging.ERROR, "accept failed: %s; retrying", exc)
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                elif exc.errno in ACCEPT_IGNORABLE_ERRNOS:
                    await trio.lowlevel.checkpoint()  # retried at once, but let others run
                else:
                    raise
                continue
            if not self._allows(host):
                sock.close()
                self._refuse(host, "connection")
                continue
            nursery.start_soon(self._serve, sock, host, None, 0)

    async def _listen_loop(self, udp: socket.socket) -> None:
        """Read announces until cancelled (errors as for accept: see :meth:`_accept_loop`)."""
        time_slice = TimeSlice()  # a UDP flood must not hold the loop
        while True:
            await time_slice.share()
            try:
                data, (host, _port) = udp.recvfrom(ANNOUNCE_SIZE)
            except BlockingIOError:
                time_slice.waiting()
                await trio.lowlevel.wait_readable(udp)
                continue
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._log.log(logging.ERROR, "UDP receive failed: %s; retrying", exc)
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                elif exc.errno not in UDP_IGNORABLE_ERRNOS:
                    raise
                continue
            if not self._allows(host):
                self._refuse(host, "announce")
                continue
            try:
                announce = protocol.decode_announce(data)
            except IvyMalformedMessage as exc:
                self._log.warning("ignoring announce from %s: %s", host, exc)
                continue
            if announce.version != protocol.PROTOCOL_VERSION:
                self._log.warning(
                    "ignoring announce from %s: protocol version %d", host, announce.version
                )
                continue
            if announce.agent_id == self._agent_id or (
                announce.agent_id is None
                and announce.port == self._port
                and host.startswith("127.")
            ):
                continue  # our own announce came back
            # Known by address only: ivy-python's announced id is not unique
            # (it is the first word of the agent name when the name has spaces).
            if self._is_connected(host, announce.port) or self._refuses(host, announce.port):
                continue
            self._offer(host, announce.port, announce.agent_id)

    def _offer(self, host: str, port: int, agent_id: str | None) -> None:
        """An announce: connect now, later (when a slot frees), or not at all."""
        verdict = self._attempts.offer(host, port, agent_id, trio.current_time())
        if verdict == "connect":
            self._start((host, port, agent_id))
        elif verdict == "queued":
            self._log.info(
                "announce of %s:%d waits: %d connections pending", host, port, len(self._attempts)
            )
        elif verdict == "full":
            self._log.warning("ignoring announce of %s:%d: too many pending", host, port)
        elif verdict == "hanging":
            self._log.info("ignoring announce of %s:%d: it did not answer lately", host, port)

    def _start(self, attempt: Attempt) -> None:
        assert self._nursery is not None, "start() first"
        self._nursery.start_soon(self._connect, *attempt)

    def _refuse(self, host: str, what: str) -> None:
        """Log a source outside ``allowed_networks`` once (and a bounded number)."""
        if (what, host) not in self._refused and len(self._refused) < MAX_REFUSED_LOGGED:
            self._refused.add((what, host))
            self._log.warning("refusing %s from %s: not in allowed_networks", what, host)

    async def _connect(self, host: str, port: int, agent_id: str | None) -> None:
        sock = None
        timed_out = False
        try:
            if not self._is_connected(host, port):  # (it may have waited its turn)
                with trio.move_on_after(CONNECT_TIMEOUT) as scope:
                    sock = await connect_tcp(host, port)
                timed_out = scope.cancelled_caught
        except OSError as exc:
            self._log.info("cannot connect to announced agent %s:%d: %s", host, port, exc)
            self._attempts.failed(host, port, trio.current_time())
            return
        finally:
            # (no checkpoint from here to the bus registering the peer)
            now = trio.current_time()
            for attempt in self._attempts.done(host, port, timed_out=timed_out, now=now):
                self._start(attempt)
        if timed_out:
            self._log.info("cannot connect to announced agent %s:%d: timed out", host, port)
        if sock is not None:
            if await self._serve(sock, host, agent_id, port):
                self._attempts.succeeded(host, port)
            else:  # (it accepted, then never finished its handshake)
                self._attempts.failed(host, port, trio.current_time())

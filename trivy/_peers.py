"""The mesh: every peer session of one agent, and the rules between them.

:class:`PeerSet` knows which sessions exist, finds the session of a
:class:`~trivy.Peer`, tells discovery whether an address is already
connected, and resolves duplicate connections to one agent the way ivy-c
does. Tasks wait for a peer with :meth:`PeerSet.wait_ready`, until the set
is closed (the bus leaving).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator

import trio

from ._errors import IvyIllegalStateError
from ._events import Peer
from ._logs import LogLimiter
from ._memory_shares import MemoryShares
from ._options import MAX_PEERS, BusOptions
from ._output import SendPace
from ._peer import PeerSession, SessionHandler

__all__ = ["PeerSet", "duplicate_loser", "open_session"]

logger = logging.getLogger("trivy")
#: Connections lost before their session began: anyone may make them.
_lost_at_once = LogLimiter(logger)

#: Seconds after a peer's handshake during which a second connection from
#: the same agent is taken as the two agents having connected to each other
#: at once (resolved as ivy-c does). Such races take milliseconds; five
#: seconds leaves room for a loaded machine.
DUPLICATE_WINDOW = 5.0
#: Connections, incoming and outgoing, that may wait for their handshake at
#: once. Real peers handshake in milliseconds; beyond this, a new one closes
#: the oldest waiting one, so connections that never speak (each a file
#: descriptor for up to ``handshake_timeout``) cannot lock real peers out.
MAX_PENDING_HANDSHAKES = 256


def duplicate_loser(local_port: int, remote_port: int) -> int:
    """The key ivy-c uses to pick which of two connections to one peer closes.

    Each side computes ``max(local, remote)`` for each of the two
    connections; the connection with the larger value is closed. Both sides
    compute the same numbers, so they agree without talking.
    """
    return max(local_port, remote_port)


class PeerSet:
    """The sessions of one agent, in connection order, ``max_peers`` at most.

    With ``shares``, the peers' memory limits follow their number.
    """

    def __init__(
        self,
        max_peers: int = MAX_PEERS,
        shares: MemoryShares | None = None,
        refuses: Callable[[str, int], bool] | None = None,
    ) -> None:
        self._max_peers = max_peers
        self._shares = shares
        self._refuses = refuses
        self._sessions: dict[PeerSession, None] = {}
        self._by_peer: dict[Peer, PeerSession] = {}
        self._log = LogLimiter(logger)  # (a flood of connections is logged boundedly)
        self._changed = trio.lowlevel.ParkingLot()  # a peer became ready or went away
        self._closed = False

    @classmethod
    def for_options(cls, options: BusOptions) -> PeerSet:
        """The set with the options' bounds on peers and on their memory."""
        shares = MemoryShares(options.max_buffered_bytes, options.send_buffer_limit)
        return cls(options.max_peers, shares, options.refuses)

    def __iter__(self) -> Iterator[PeerSession]:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: PeerSession) -> bool:
        """Register a new session; False (and nothing registered) if it is ourselves,
        or one too many.

        An announce naming our own port, from any address of this host, makes
        us connect to our own listener: then both ends of that connection are
        sessions of ours. The other end is aborted here, this one refused.
        """
        for other in self._sessions:
            if (other.local_address, other.remote_address) == (
                session.remote_address,
                session.local_address,
            ):
                self._log.info("connected to ourselves through %s: closing", session.remote_address)
                other.abort()
                return False
        if len(self._sessions) >= self._max_peers and not self._make_room(session.peer.host):
            self._log.warning(
                "%d connections: closing a new one, from %s", len(self._sessions), session.peer.host
            )
            return False
        pending = (  # (fewer sessions than the bound: no need to look)
            [s for s in self._sessions if not s.ready and not s.closing]
            if len(self._sessions) >= MAX_PENDING_HANDSHAKES
            else []
        )
        if len(pending) >= MAX_PENDING_HANDSHAKES:
            oldest = pending[0]
            self._log.warning(
                "%d connections without a handshake: closing the oldest, %s",
                len(pending),
                oldest.peer,
            )
            oldest.abort("too many connections without a handshake")
        self._sessions[session] = None
        self._by_peer[session.peer] = session
        if self._shares is not None:
            self._shares.peers_changed(self._sessions, session)
        return True

    def _make_room(self, host: str) -> bool:
        """At ``max_peers``, a newcomer from ``host`` takes the place of the
        newest connection of the host that holds the most, if that one holds
        over a sixteenth of them and two more than ``host``: one host cannot
        keep the others out (1,000 silent connections of one kept every
        newcomer out), and many addresses cannot push out a host's agents
        below its share (they evicted 9 of a host's 10). Whether it did."""
        by_host: dict[str, list[PeerSession]] = {}
        for other in self._sessions:
            if not other.closing:
                by_host.setdefault(other.peer.host, []).append(other)
        most = max(by_host.values(), key=len, default=[])
        if len(most) < max(len(by_host.get(host, ())) + 2, self._max_peers // 16 + 1):
            return False
        newest = most[-1]
        self._log.warning(
            "%d connections, %d from %s: closing its newest for one from %s",
            len(self._sessions), len(most), newest.peer.host, host,
        )  # fmt: skip
        newest.abort("too many connections from its host, with others waiting")
        return True

    def remove(self, session: PeerSession) -> bool:
        """Forget a session; True if it was ready (its peer is now gone)."""
        known = self._sessions.pop(session, False) is None
        self._by_peer.pop(session.peer, None)
        if known and self._shares is not None and not self._closed:
            self._shares.peers_changed(self._sessions)
        was_ready = known and session.ready
        if was_ready:
            self._changed.unpark_all()
        return was_ready

    def mark_ready(self, session: PeerSession) -> None:
        """The session's handshake is complete."""
        session.mark_ready()
        self._changed.unpark_all()

    def close(self) -> None:
        """The bus is leaving: every :meth:`wait_ready` raises, now and later."""
        self._closed = True
        self._changed.unpark_all()

    def ready_peers(self) -> list[Peer]:
        """The peers whose handshake is complete, in connection order."""
        return [session.peer for session in self._sessions if session.ready and not session.closing]

    async def wait_ready(self, name: str | None) -> Peer:
        """The first ready peer named ``name`` (any if None), once there is one.

        Raises:
          IvyIllegalStateError: the set is closed (or closes meanwhile).
        """
        while not self._closed:
            found = next((p for p in self.ready_peers() if name in (None, p.name)), None)
            if found is not None:
                await trio.lowlevel.checkpoint()
                return found
            await self._changed.park()
        raise IvyIllegalStateError("the bus is not running")

    def session_of(self, peer: Peer) -> PeerSession:
        """The open session of ``peer``.

        Raises:
          TypeError: ``peer`` is not a :class:`~trivy.Peer` (a name, say).
          IvyIllegalStateError: the peer is not (or no longer) connected.
        """
        if not isinstance(peer, Peer):
            raise TypeError(
                f"peer must be a Peer (from bus.peers, or an event), not {type(peer).__name__}"
            )
        session = self._by_peer.get(peer)
        if session is None or session.closing:
            raise IvyIllegalStateError(f"{peer} is not connected")
        return session

    def is_connected(self, host: str, port: int) -> bool:
        """Whether a session with the agent listening on ``host:port`` exists."""
        return any(s.peer.host == host and s.peer.port == port for s in self._sessions)

    def identified(self, session: PeerSession) -> bool:
        """A session's hello named its agent: whether it goes on.

        An agent the options' ``refuse_peer`` refuses is told BYE and let
        go; a duplicate is resolved (:meth:`resolve_duplicate`).
        """
        peer = session.peer
        if self._refuses is not None and self._refuses(peer.host, peer.port):
            session.log.info("%s: refused (refuse_peer)", peer)
            session.say_bye()
            session.abort()
            return False
        return self.resolve_duplicate(session)

    def resolve_duplicate(self, session: PeerSession) -> bool:
        """A newly identified session duplicates another: close one of the two.

        Two agents that connect to each other at the same moment make two
        connections; both compute ivy-c's choice from the ports, so exactly
        one survives on both sides. A real duplicate is born within
        :data:`DUPLICATE_WINDOW` of the first connection's handshake; a claim
        to an established peer's address after that is an impostor (any
        process of that host can claim any port): the claimant is closed,
        and the working peer kept.

        Returns:
          False if ``session`` itself is the one closed.
        """
        now = trio.current_time()
        for other in self._sessions:
            if (
                other is not session
                and other.identified_at is not None
                and not other.closing
                and other.peer.host == session.peer.host
                and other.peer.port == session.peer.port
            ):
                if now - other.identified_at > DUPLICATE_WINDOW:
                    loser = session
                    session.log.warning("%s: claimed by a second connection: refused", session.peer)
                else:
                    mine = duplicate_loser(session.local_address[1], session.remote_address[1])
                    theirs = duplicate_loser(other.local_address[1], other.remote_address[1])
                    loser = session if mine > theirs else other
                    session.log.info("%s: duplicate connection, closing one", session.peer)
                loser.reject_duplicate()
                return loser is not session
        return True


def open_session(
    sock: socket.socket,
    host: str,
    options: BusOptions,
    handler: SessionHandler,
    agent_id: str | None = None,
    announced_port: int = 0,
    log: LogLimiter | None = None,
    pace: SendPace | None = None,
) -> PeerSession | None:
    """A session for a new connection, with the options' limits; None if it is gone."""
    try:
        return PeerSession(
            sock,
            host,
            options.new_connection(),
            handler,
            options,
            agent_id,
            announced_port,
            log,
            pace,
        )
    except OSError as exc:  # the peer left at once
        (log or _lost_at_once).info("connection with %s lost at once: %s", host, exc)
        return None

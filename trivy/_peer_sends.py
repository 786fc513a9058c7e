"""What the application says to one peer: direct messages, ERROR, DIE, raw lines, PING.

None of these calls waits (but :meth:`PeerSends.ping`, for the PONG), so
none can wait for a peer that reads slowly: each is queued while the peer
is within its limit plus its excess (see the connection's ``has_room``),
and refused past it under the overflow policy, as ``send_nowait`` refuses
a MSG. Otherwise a peer reading a trickle made us hold all that was sent
to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._errors import IvyIllegalStateError
from ._events import Peer
from ._peer import PeerSession
from ._routing import Router
from .protocol import MsgType

__all__ = ["PeerSends"]


class PeerSends:
    """:class:`~trivy.IvyBus`'s methods that address one peer.

    Each returns True when the message was queued, and False when the
    peer's output was over its limit by its excess (``MAX_EXCESS``, 16 MiB,
    less when many peers share the memory; over the limit at all for a peer
    the senders no longer wait for): the message is then dropped, counted
    in a :class:`~trivy.Congestion` event, or the peer disconnected under
    ``overflow="disconnect"``.
    """

    _router: Router

    if TYPE_CHECKING:

        def _session(self, peer: Peer) -> PeerSession: ...

    def send_direct(self, peer: Peer, num_id: int, text: str) -> bool:
        """Send a DIRECT_MSG to one peer; whether it was queued (see above).

        Raises:
          ValueError: the text contains a newline (and ``java_newlines`` is off).
          IvyIllegalStateError: the peer is not connected.
        """
        session = self._session(peer)
        return session.send_direct(num_id, text) or self._router.refused(session, len(text))

    def send_raw(
        self, peer: Peer, msg_type: MsgType | int, num_id: int, params: str | Sequence[str] = ""
    ) -> bool:
        """Send one protocol message to one peer, as it is; whether it was queued.

        The escape hatch for what the other methods do not cover (a MSG for
        a given subscription id, a DIE with a text...), as ivy-python's
        ``IvyClient`` allows. ``params`` as in :func:`trivy.protocol.encode`.

        Raises:
          ValueError: a parameter contains a newline.
          IvyIllegalStateError: the peer is not connected.
        """
        session = self._session(peer)
        size = len(params) if isinstance(params, str) else sum(len(p) + 1 for p in params)
        return session.send_raw(msg_type, num_id, params) or self._router.refused(session, size)

    def send_error(self, peer: Peer, num_id: int, text: str) -> bool:
        """Send an ERROR to one peer; whether it was queued.

        Raises:
          ValueError: the text contains a newline.
          IvyIllegalStateError: the peer is not connected.
        """
        session = self._session(peer)
        return session.send_error(num_id, text) or self._router.refused(session, len(text))

    def send_die(self, peer: Peer, num_id: int = 0) -> bool:
        """Ask one peer to terminate (DIE); whether it was queued.

        Raises:
          IvyIllegalStateError: the peer is not connected.
        """
        session = self._session(peer)
        return session.send_die(num_id) or self._router.refused(session, 0)

    async def ping(self, peer: Peer) -> float:
        """PING a peer, wait for its PONG (bound it with ``trio.fail_after``); the round trip in s.

        Raises:
          IvyIllegalStateError: the peer is not (or no longer) connected.
        """
        try:
            return await self._session(peer).pings.ping()
        except ConnectionError as exc:
            raise IvyIllegalStateError(str(exc)) from None

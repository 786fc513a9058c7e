"""What the compat server tells of the connected agents (ivy-python's ``get_client*``)."""

from __future__ import annotations

from collections.abc import Callable

from .. import IvyIllegalStateError, Peer
from ._bridge import BusThread
from ._client import IvyClient

__all__ = ["ServerInspection"]


class ServerInspection:
    """The ``get_client*`` methods of :class:`~trivy.compat.ivy.IvyServer`."""

    _trivy_bridge: BusThread  # (set by IvyServer.__init__)

    def _client(self, peer: Peer) -> IvyClient:
        raise NotImplementedError  # (IvyServer's)

    def _clients_where(self, keep: Callable[[Peer], bool]) -> list[IvyClient]:
        try:
            return self._trivy_bridge.call(
                lambda bus: [self._client(peer) for peer in bus.peers if keep(peer)]
            )
        except IvyIllegalStateError:
            return []

    def get_clients(self) -> list[str]:
        """The names of the connected agents."""
        try:
            return self._trivy_bridge.call(lambda bus: [peer.name for peer in bus.peers])
        except IvyIllegalStateError:
            return []

    def get_client_with_name(self, name: str) -> list[IvyClient]:
        """The connected agents named ``name``."""
        return self._clients_where(lambda peer: peer.name == name)

    def get_client(self, ip: str, port: int) -> IvyClient:
        """The connected agent at ``ip:port``.

        Raises:
          ValueError: no such agent.
        """
        clients = self._clients_where(lambda peer: peer.host == ip and peer.port == port)
        if not clients:
            raise ValueError("Client is not registered")
        return clients[0]

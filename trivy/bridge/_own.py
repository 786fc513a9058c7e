"""The bridge's own agents on the bus: its observer and its proxies.

They need no connection among them: a proxy's texts are for the local
agents, and the other proxies' agents get them on their own site. Each of
them refuses the others (``refuse_peer``), so a bridge showing N remote
agents holds about N connections a local agent, not N² among its proxies
(100 remote agents held 10,518 descriptors and 236 MB), and no proxy
compiles another's regexps.
"""

from __future__ import annotations

import socket

__all__ = ["OwnAgents"]

#: Hosts remembered as this machine's or not (peers' addresses: bounded).
MAX_HOSTS = 1024


class OwnAgents:
    """The ports the bridge's agents listen on, and who is one of them."""

    def __init__(self) -> None:
        #: The TCP ports of the observer and the proxies.
        self.ports: set[int] = set()
        self._hosts: dict[str, bool] = {}

    def __call__(self, host: str, port: int) -> bool:
        """Whether the agent listening on ``host:port`` is one of ours
        (a ``refuse_peer`` predicate)."""
        return port in self.ports and self._is_this_machine(host)

    def _is_this_machine(self, host: str) -> bool:
        """Whether ``host`` is an address of this machine (a port is one
        agent's on one host only: another host's agent may share the number)."""
        known = self._hosts.get(host)
        if known is None:
            known = _can_bind(host)
            if len(self._hosts) < MAX_HOSTS:
                self._hosts[host] = known
        return known


def _can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except (OSError, ValueError):  # (not ours, or not an IPv4 address)
        return False
    return True

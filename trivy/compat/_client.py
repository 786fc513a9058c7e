"""ivy-python's ``IvyClient``: another agent on the bus."""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from .. import Peer
from ..protocol import MsgType
from ._bridge import BusThread


class ClientServer(Protocol):
    """What an :class:`IvyClient` needs of its server (an ``IvyServer``)."""

    @property
    def _trivy_bridge(self) -> BusThread: ...

    def _start_ping(self, client: IvyClient) -> None: ...


class IvyClient:
    """Another agent on the bus, as ivy-python's callbacks receive it.

    Wraps a :class:`trivy.Peer`. The same object is handed to every callback
    about one connected peer, so ``send_msg(text, to=agent)`` works.

    Attributes:
      agent_name: its name; ip: its address; port: its TCP port;
      agent_id: its id when its announce told us (else None).
    """

    def __init__(self, server: ClientServer, peer: Peer) -> None:
        self._server = server
        self.peer = peer
        self._pings_sent: collections.deque[int] = collections.deque()
        self._ping_lock = threading.Lock()

    @property
    def agent_name(self) -> str:
        """The agent's name on the bus."""
        return self.peer.name

    @property
    def ip(self) -> str:
        """The address the agent connects from / listens on."""
        return self.peer.host

    @property
    def port(self) -> int:
        """The agent's TCP listening port."""
        return self.peer.port

    @property
    def agent_id(self) -> str | None:
        """The agent's bus-unique id, when known."""
        return self.peer.agent_id

    @property
    def fqdn(self) -> str:
        """The agent's host name (a DNS lookup: call it outside callbacks)."""
        return socket.getfqdn(self.ip)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IvyClient):
            return self.ip == other.ip and self.port == other.port
        if isinstance(other, (tuple, list)) and len(other) == 2:
            return bool(self.ip == other[0] and self.port == other[1])
        return False

    def __hash__(self) -> int:
        return hash((self.ip, self.port))

    def __repr__(self) -> str:
        return f"{self.ip}:{self.port} ({self.agent_name})"

    def __str__(self) -> str:
        return f"{self.agent_name}@{self.ip}:{self.port}"

    # ------------------------------------------------------------- sending
    def _send_raw(self, msg_type: MsgType, num_id: int, params: str | Sequence[str] = "") -> None:
        # ivy-python lets an agent write any protocol message to a client.
        self._server._trivy_bridge.call(
            lambda bus: bus.send_raw(self.peer, msg_type, num_id, params)
        )

    def send_message(self, num_id: int, captures: Sequence[str]) -> None:
        """Send a MSG for the agent's subscription ``num_id`` with these groups."""
        self._send_raw(MsgType.MSG, num_id, tuple(captures))

    def send_direct_message(self, num_id: int, msg: str) -> None:
        """Send a direct message."""
        self._server._trivy_bridge.call(lambda bus: bus.send_direct(self.peer, num_id, msg))

    def send_die_message(self, num_id: int = 0, msg: str = "") -> None:
        """Ask the agent to die."""
        self._send_raw(MsgType.DIE, num_id, msg)

    def send_error(self, num_id: int, msg: str) -> None:
        """Send an error message."""
        self._server._trivy_bridge.call(lambda bus: bus.send_error(self.peer, num_id, msg))

    def send_ping(self) -> None:
        """PING the agent; its PONG calls the server's pong callback with the delay."""
        with self._ping_lock:
            self._pings_sent.append(time.perf_counter_ns())
        self._server._start_ping(self)

    def get_next_ping_delta_ns(self) -> int | None:
        """Nanoseconds since the oldest PING not yet accounted for (it is then
        forgotten); None if there is none."""
        with self._ping_lock:
            if not self._pings_sent:
                return None
            return time.perf_counter_ns() - self._pings_sent.popleft()

    def get_next_ping_delta(self) -> float | None:
        """:meth:`get_next_ping_delta_ns`, in seconds."""
        delta = self.get_next_ping_delta_ns()
        return None if delta is None else delta / 1e9

    def send_pong(self, num_id: int) -> None:
        """Answer a PING (trivy's core already answers every PING itself)."""
        self._send_raw(MsgType.PONG, num_id)

    def send_new_subscription(self, idx: int, regexp: str) -> None:
        """Send the agent an ADD_REGEXP (trivy sends ours itself: see ``bind_msg``)."""
        self._send_raw(MsgType.ADD_REGEXP, idx, regexp)

    def remove_subscription(self, idx: int) -> None:
        """Send the agent a DEL_REGEXP (see :meth:`send_new_subscription`)."""
        self._send_raw(MsgType.DEL_REGEXP, idx)

    def start_init(self, agent_name: str) -> None:
        """Part of ivy-python's handshake, which trivy's core runs itself: the
        name comes from the agent's START_REGEXP. Kept so that calls and
        overrides do not break; it does nothing."""

    def end_init(self) -> None:
        """See :meth:`start_init`: does nothing."""

    def wave_bye(self, num_id: int = 0) -> None:
        """Send BYE to the agent (it then closes the connection)."""
        self._send_raw(MsgType.BYE, num_id)

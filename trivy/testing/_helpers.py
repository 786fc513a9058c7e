"""Helpers for tests of agents: bus addresses, background buses, waiting, a raw peer."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import trio

from .._bus import IvyBus
from .._event_streams import EventStream
from .._events import BusEvent, Peer, SubscriptionAdded, SubscriptionChanged
from .._open import open_ivy_bus
from .._options import BusOptionsArgs

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "RawPeer",
    "free_bus_address",
    "serve_bus",
    "wait_for_event",
    "wait_for_subscription",
]


def free_bus_address() -> str:
    """A private loopback bus, ``"127.255.255.255:<port>"``, on a UDP port free now.

    Each test taking its own keeps runs (and parallel test processes) from
    seeing each other's agents; nothing leaves the machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"127.255.255.255:{port}"


async def serve_bus(
    agent_name: str,
    bus: str | None = None,
    *,
    task_status: trio.TaskStatus[IvyBus] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[BusOptionsArgs],
) -> None:
    """Run :func:`~trivy.open_ivy_bus` in a background task, until stopped.

    The trio way to start it and get the bus once it runs::

        bus = await nursery.start(functools.partial(serve_bus, "NAME", address))

    ``bus.stop()`` (or cancelling the nursery) ends it. ``options`` are those
    of :func:`~trivy.open_ivy_bus`.
    """
    async with open_ivy_bus(agent_name, bus, **options) as ivy:
        task_status.started(ivy)
        await trio.sleep_forever()


async def wait_for_event(events: EventStream[BusEvent], kind: type | tuple[type, ...]) -> Any:
    """The next event of ``kind`` from a bus event stream (others are skipped).

    Raises:
      AssertionError: the stream ended first.
    """
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"event stream ended before a {kind}")


async def wait_for_subscription(bus: IvyBus, peer_name: str, regexp: str) -> Peer:
    """Wait until the peer named ``peer_name`` is ready and subscribed with ``regexp``.

    Use it before sending to a peer in a test: right after
    :meth:`~trivy.IvyBus.wait_for_peer` returns, the peer's handshake is
    done but the subscriptions it makes next may still be on their way, and
    a text sent then reaches none of them.
    """
    peer = await bus.wait_for_peer(peer_name)
    async with bus.events() as events:
        while regexp not in peer.subscriptions.values():
            await wait_for_event(events, (SubscriptionAdded, SubscriptionChanged))
    return peer


class RawPeer:
    """A hand-driven Ivy peer on a real TCP connection, for protocol-level tests.

    It sends the bytes a test gives it and reads back lines, so a test sees
    exactly what an agent puts on the wire. It answers nothing by itself
    (not even PING).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    async def connect(cls, bus: IvyBus) -> RawPeer:
        """Connect to ``bus``'s listener on loopback."""
        return cls(await trio.open_tcp_stream("127.0.0.1", bus.port))

    async def send(self, data: bytes) -> None:
        """Send raw bytes (whole lines end with ``\\n``)."""
        await self.stream.send_all(data)

    async def handshake(self, name: str = "RAW", subscriptions: bytes = b"") -> None:
        """Introduce ourselves as ``name`` (port 1234), with raw subscription lines.

        For example ``subscriptions=b"1 0\\x02^hello (.*)\\n"``.
        """
        await self.send(b"6 1234\x02" + name.encode() + b"\n" + subscriptions + b"5 0\x02\n")

    async def line(self) -> bytes:
        """The next line from the agent, without its newline (``b""`` at EOF)."""
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def line_starting(self, prefix: bytes) -> bytes:
        """Skip lines until one starts with ``prefix`` (``b""`` at EOF)."""
        while True:
            line = await self.line()
            if line.startswith(prefix) or not line:
                return line

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()

"""Test helpers: a raw-socket Ivy peer and small waiting utilities."""

from __future__ import annotations

import trio

import trivy


class RawPeer:
    """A hand-driven Ivy peer on a real loopback TCP connection to a bus.

    It sends whatever bytes a test gives it and reads back lines, so tests
    see exactly what trivy puts on the wire.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    async def connect(cls, bus: trivy.IvyBus) -> RawPeer:
        return cls(await trio.open_tcp_stream("127.0.0.1", bus.port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def handshake(self, name: str = "RAW", subscriptions: bytes = b"") -> None:
        await self.send(b"6 1234\x02" + name.encode() + b"\n" + subscriptions + b"5 0\x02\n")

    async def line(self) -> bytes:
        """The next line from the bus, without its newline (b"" at EOF)."""
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def line_starting(self, prefix: bytes) -> bytes:
        """Skip lines until one starts with ``prefix``."""
        while True:
            line = await self.line()
            if line.startswith(prefix) or not line:
                return line

    async def aclose(self) -> None:
        await self.stream.aclose()


async def wait_for_event(
    events: trivy.EventStream[trivy.BusEvent], kind: type | tuple[type, ...]
) -> object:
    """The next event of one kind from a bus event stream."""
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"event stream ended before a {kind}")


async def wait_for_subscription(bus: trivy.IvyBus, peer_name: str, regexp: str) -> trivy.Peer:
    """Wait until the named peer is ready and subscribed with ``regexp``."""
    peer = await bus.wait_for_peer(peer_name)
    async with bus.events() as events:
        while regexp not in peer.subscriptions.values():
            await wait_for_event(events, (trivy.SubscriptionAdded, trivy.SubscriptionChanged))
    return peer

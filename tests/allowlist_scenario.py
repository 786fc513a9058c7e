"""An agent with ``allowed_networks``, run inside a private network namespace.

Usage: ``python -m tests.allowlist_scenario PORT``, in a namespace whose
loopback also carries 10.213.1.1/24 (allowed) and 10.213.2.1/24 (not). It
prints one JSON line of what happened to connections and announces from
each, and exits 0.
"""

from __future__ import annotations

import json
import logging
import socket
import sys

import trio

import trivy
from trivy.testing import RawPeer

ALLOWED, OTHER = "10.213.1.1", "10.213.2.1"


async def connect_from(source: str, port: int) -> RawPeer:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return RawPeer(trio.SocketStream(sock))


def announce_from(source: str, bus_port: int, listener_port: int, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((source, 0))
        datagram = f"3 {listener_port} {name}:1 {name}\n".encode()
        for _ in range(5):  # logged once, however many
            udp.sendto(datagram, ("127.0.0.1", bus_port))


async def main(bus_port: int) -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("trivy").addHandler(handler)
    result: dict[str, object] = {}
    with trio.fail_after(10):
        # (a loopback bus listens on loopback alone by default: wider here)
        async with trivy.open_ivy_bus(
            "A", f"127:{bus_port}", host="0.0.0.0", allowed_networks="10.213.1.0/24"
        ) as a:
            # a connection from elsewhere is closed before a byte is sent
            other = await connect_from(OTHER, a.port)
            result["other_connection"] = (await other.line()).decode()
            # one from the allowed network is served
            allowed = await connect_from(ALLOWED, a.port)
            await allowed.handshake("FRIEND")
            peer = await a.wait_for_peer("FRIEND")
            result["allowed_connection"] = peer.host
            # announces: from elsewhere ignored; from the allowed network, we
            # connect to the announced listener
            listeners = {}
            for source in (OTHER, ALLOWED):
                listener = trio.socket.socket()
                await listener.bind((source, 0))
                listener.listen()
                listeners[source] = listener
                port = listener.getsockname()[1]
                announce_from(source, bus_port, port, "X" + source.split(".")[2])
            accepted, (host, _) = await listeners[ALLOWED].accept()
            result["connected_to"] = host
            accepted.close()
            await other.aclose()
            await allowed.aclose()
    refusals = [r for r in records if r.startswith("refusing")]
    result["refusals"] = refusals
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))

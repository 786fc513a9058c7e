"""The compat layer's callback queue is bounded in characters, not only in jobs.

A raw peer flooding 1 MiB MSGs at a binding whose callback blocks had every
one queued (10,000 jobs before the bus waited: about 10 GB). Now the bus
stops reading the peer once the queued callbacks hold the core's 16 Mi
characters, and reads on as they run: nothing is dropped.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from trivy.compat import _callback_thread as callback_thread
from trivy.compat.ivy import IvyClient, IvyServer

from .conftest import free_udp_port
from .test_compat import TIMEOUT

#: Characters of each flooded MSG's one group, and how many are sent: 40 MB,
#: well over the bound, far under the count bound.
SIZE = 1_000_000  # (a line is 1 MiB at most)
FLOOD = 40


def _raw_peer(port: int) -> tuple[socket.socket, int]:
    """A peer speaking the protocol by hand; returns it and the id of our ``^(.*)$``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(b"6 1\x02FLOODER\n5 0\x02\n")  # (its port, name; no subscriptions)
    data, sub_id = b"", None
    while sub_id is None or b"5 0\x02\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the agent closed the connection during the handshake"
        data += chunk
        for line in data.split(b"\n"):
            if line.startswith(b"1 ") and line.endswith(b"\x02^(.*)$"):
                sub_id = int(line[2:].split(b"\x02")[0])
    sock.settimeout(None)  # (its sends wait for the agent, as long as it takes)
    return sock, sub_id


def test_a_flood_of_big_messages_waits_once_the_queue_holds_16_mi_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate, all_run = threading.Event(), threading.Event()
    sizes: list[int] = []

    def on_msg(agent: IvyClient, text: str) -> None:
        sizes.append(len(text))
        if len(sizes) == FLOOD:
            all_run.set()
        gate.wait(TIMEOUT)  # the application falls behind until let go

    # The bus waits for room through _put (in a worker thread): say so.
    waiting, put = threading.Event(), callback_thread._put

    def watched_put(run: object, job: object) -> bool:
        waiting.set()
        return put(run, job)  # type: ignore[arg-type]

    monkeypatch.setattr(callback_thread, "_put", watched_put)
    server = IvyServer("COMPAT", usesDaemons=True)
    server.bind_msg(on_msg, "^(.*)$")
    server.start(f"127:{free_udp_port()}")
    sock, sub_id = _raw_peer(server.port)
    line = b"2 %d\x02" % sub_id + b"x" * SIZE + b"\x03\n"
    sender = threading.Thread(target=lambda: [sock.sendall(line) for _ in range(FLOOD)])
    sender.start()
    callbacks = server._trivy_callbacks
    try:
        deadline = time.monotonic() + TIMEOUT
        while not waiting.wait(0.01):  # (a wait for either outcome, not a delay)
            queued = len(callbacks._run.jobs) + len(sizes)
            assert queued < FLOOD, f"all {queued} MSGs were queued: the bus never waited"
            assert time.monotonic() < deadline, "the bus neither queued nor waited"
        jobs, chars = callbacks.pending()
        # one more MSG may be queued while the bus is told to wait
        assert chars <= callback_thread.MAX_PENDING_CHARS
        assert jobs <= callback_thread.MAX_PENDING_CHARS // SIZE + 1
        gate.set()  # the application catches up: the bus reads on, dropping nothing
        assert all_run.wait(TIMEOUT)
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        assert sizes == [SIZE] * FLOOD
    finally:
        gate.set()
        sock.close()
        server.stop()
        sender.join(TIMEOUT)
    assert callbacks.pending() == (0, 0)  # every callback's characters given back

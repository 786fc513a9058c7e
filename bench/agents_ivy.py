"""The ivy-python 4.0 side of the benchmark agents (see :mod:`bench.agents`).

Imported only by an ivy-python agent's process: ivy-python is thread-based
and never shares a process with trio. The same code runs unmodified on
``trivy.compat`` (the implementation ``compat``): an ivy-python program
ported with its one import.
"""

from __future__ import annotations

import argparse
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.agents import ECHO_NAME, POLL, RECV_PREFIX, TIMEOUT, emit, latency_report, rss_kib


def _ivy_server(impl: str, name: str, app_callback: Callable[..., None] | None = None) -> Any:
    """An IvyServer (ivy-python's, or trivy.compat's for ``compat``) with
    daemon threads and a fast stop."""
    if impl == "compat":
        from trivy.compat.ivy import IvyServer
    else:
        from ivy.ivy import IvyServer  # type: ignore[import-untyped,no-redef]

    class Server(IvyServer):  # type: ignore[misc]
        daemon_threads = True

        def serve_forever(self, poll_interval: float = 0.05) -> None:
            super().serve_forever(poll_interval)

    kwargs: dict[str, Any] = {"usesDaemons": True}
    if app_callback is not None:
        kwargs["app_callback"] = app_callback
    return Server(name, **kwargs)


def _ivy_start_and_wait_announce(server: Any, bus: str) -> None:
    """Start ``server``; return once its own announce comes back (UDP bound)."""
    port = int(bus.rsplit(":", 1)[1])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.bind(("", port))
    try:
        server.start(bus)
        deadline = time.monotonic() + 10.0
        while (left := deadline - time.monotonic()) > 0:
            udp.settimeout(left)
            try:
                data = udp.recv(1024)
            except OSError:
                return
            if server.agent_id.encode() in data:
                return
    finally:
        udp.close()


def _ivy_wait(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until true; raise TimeoutError after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("agent wait timed out")
        time.sleep(POLL)


def _ivy_subscribed(server: Any, prefix: str, subs: int) -> list[Any]:
    """The peers whose name starts with ``prefix`` showing ``subs`` subscriptions."""
    found = []
    for name in set(server.get_clients()):
        if name.startswith(prefix):
            for client in server.get_client_with_name(name):
                if len(server.get_client_bindings(client)) >= subs:
                    found.append(client)
    return found


def ivy_main(args: argparse.Namespace) -> None:
    """Run one ivy-python agent in the role ``args.role``."""
    role = args.role
    done = threading.Event()
    if role == "join":
        emit(loaded=True)
        sys.stdin.readline()

        def on_app(_client: Any, _event: int) -> None:
            seen = len(set(server.get_clients()))
            emit(seen=seen)
            if seen >= args.peers:
                done.set()

        server = _ivy_server(args.impl, args.name, on_app)
    else:
        server = _ivy_server(args.impl, args.name)
    emit(port=server.port)  # (bound when made; bench.sides connects to it)
    try:
        if role == "recv":
            _ivy_recv(server, args)
        elif role == "send":
            server.start(args.bus)
            _ivy_wait(lambda: len(_ivy_subscribed(server, RECV_PREFIX, args.subs)) >= args.peers)
            start = time.monotonic()
            for i in range(args.n):
                server.send_msg(f"{args.prefix} {i}")
            emit(start=start, end=time.monotonic(), sent=args.n)
            sys.stdin.read()
        elif role == "echo":
            server.bind_msg(lambda _c, ts: server.send_msg(f"pong ts={ts}"), r"^ping ts=(.*)")
            _ivy_start_and_wait_announce(server, args.bus)
            emit(ready=True)
            sys.stdin.read()
        elif role == "ping":
            _ivy_ping(server, args)
        elif role == "join":
            server.start(args.bus)
            if not done.wait(TIMEOUT):
                raise TimeoutError("join timed out")
            emit(joined=time.monotonic())
            sys.stdin.read()
        elif role == "mem":
            server.start(args.bus)
            time.sleep(0.2)
            emit(idle_kib=rss_kib())
            for i in range(args.n):
                server.bind_msg(lambda *_: None, f"^word{i} (.*)")
            time.sleep(0.2)
            emit(subs_kib=rss_kib())
    finally:
        if server.isAlive():
            server.stop()


def _ivy_recv(server: Any, args: argparse.Namespace) -> None:
    n = args.n
    done = threading.Event()
    state = {"count": 0, "first": 0.0, "last": 0.0}

    def on_match(_client: Any, _group: str) -> None:
        state["count"] += 1
        if state["count"] == 1:
            state["first"] = time.monotonic()
        if state["count"] == n:
            state["last"] = time.monotonic()
            done.set()

    for i in range(args.extra):
        server.bind_msg(lambda *_: None, f"^word{i} (.*)")
    server.bind_msg(on_match, args.regexp)
    _ivy_start_and_wait_announce(server, args.bus)
    emit(ready=True)
    if not done.wait(TIMEOUT):
        raise TimeoutError(f"received {state['count']} of {n}")
    emit(**state)


def _ivy_ping(server: Any, args: argparse.Namespace) -> None:
    answers: queue.Queue[str] = queue.Queue()
    server.bind_msg(lambda _c, ts: answers.put(ts), r"^pong ts=(.*)")
    server.start(args.bus)
    _ivy_wait(lambda: bool(_ivy_subscribed(server, ECHO_NAME, 1)))
    for _ in range(50):  # warm up, and make sure the echo knows our subscription
        server.send_msg("ping ts=warm")
        try:
            while answers.get(timeout=0.2) != "warm":
                pass
            break
        except queue.Empty:
            continue
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(args.n):
        token = str(i)
        t0 = clock()
        server.send_msg(f"ping ts={token}")
        while answers.get(timeout=TIMEOUT) != token:
            pass
        samples.append(clock() - t0)
    latency_report(samples)

"""``python -m bench.floors``: the round trip's floors, under any Ivy code.

One short line to an echo process over loopback TCP and back, one at a
time, median and p99 in µs, with the least code each side can have:

- ``blocking``: a blocking Python client, a blocking Python echo (a thread
  in ``recv``, as ivy-python's peers are);
- ``trio``: both ends trio, raw non-blocking sockets, each read tried first
  and ``wait_readable`` only when it would block: the least a trio agent
  pays (a readiness wait, an epoll re-arm, a scheduler pass each side);
- ``trio+task``: the same, but the client's answer goes from the reading
  task to the waiting one through a memory channel, as a subscription's
  ``async for`` does: one more scheduler pass on the client's side.

Compare with ``python -m bench --only roundtrip`` (a real agent each side).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

import trio

#: Exchanges measured (after as many to warm up, a tenth of them).
EXCHANGES = 20_000
LINE = b"ping ts=1234567\n"


def _blocking_echo(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(4096):
            sock.sendall(data)


async def _trio_echo(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        if not data:
            return
        sock.send(data)
        await trio.lowlevel.wait_readable(sock)  # (a short read: the kernel had no more)


def echo_main(kind: str, port: int) -> None:
    """The echo process: connect back to the client's port and echo until EOF."""
    if kind == "blocking":
        _blocking_echo(port)
    else:
        trio.run(_trio_echo, port)


def _samples_blocking(conn: socket.socket, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        conn.sendall(LINE)
        got = b""
        while not got.endswith(b"\n"):
            got += conn.recv(4096)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


async def _samples_trio(conn: socket.socket, n: int, via_task: bool) -> list[float]:
    conn.setblocking(False)
    samples: list[float] = []
    send, receive = trio.open_memory_channel[bytes](1)

    async def reader() -> None:
        while True:
            try:
                data = conn.recv(4096)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(conn)
                continue
            send.send_nowait(data)
            await trio.lowlevel.wait_readable(conn)

    async def read_directly() -> bytes:
        while True:
            try:
                return conn.recv(4096)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(conn)

    async with trio.open_nursery() as nursery:
        if via_task:
            nursery.start_soon(reader)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            conn.send(LINE)
            if via_task:
                await receive.receive()
            else:
                await read_directly()
            samples.append((time.perf_counter_ns() - t0) / 1000)
        nursery.cancel_scope.cancel()
    return samples


def measure(kind: str, n: int) -> list[float]:
    """Round trips of ``n`` exchanges with the ``kind`` of both ends, in µs."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        echo_kind = "blocking" if kind == "blocking" else "trio"
        command = [sys.executable, "-m", "bench.floors", "--echo", echo_kind, str(port)]
        with subprocess.Popen(command) as echo:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                warm = max(1, n // 10)
                if kind == "blocking":
                    samples = _samples_blocking(conn, warm + n)
                else:
                    samples = trio.run(_samples_trio, conn, warm + n, kind == "trio+task")
                conn.shutdown(socket.SHUT_WR)
            echo.wait(10)
    return samples[warm:]


def main(argv: list[str] | None = None) -> int:
    """Command line: measure every floor, print median and p99."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.floors", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 exchanges")
    parser.add_argument("--echo", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        echo_main(args.echo[0], int(args.echo[1]))
        return 0
    n = 500 if args.quick else EXCHANGES
    for kind in ("blocking", "trio", "trio+task"):
        samples = sorted(measure(kind, n))
        p99 = samples[int(0.99 * (len(samples) - 1))]
        print(f"{kind:10} median {statistics.median(samples):6.1f} µs   p99 {p99:6.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The floors of ``bench.sides``: the least Python a trio agent can spend a message.

Run by ``bench.sides`` as ``python -m bench.side_floors ROLE N [MODE]``: a trio
process that listens on a loopback port (printed as ``{"port"}``) for the
side's bare peer, and does for each message only what any Ivy agent must,
written straight in one function, with no checks, limits or events:

- ``recv``: says it subscribes ``^data (.*)``, then reads 64 KiB at a time,
  splits the lines, parses each MSG (id, groups) and hands the groups to a
  callback (``bind``), or to a task that takes them with ``async for`` from a
  deque, yielding once per 256 (``iter``); prints ``{"count", "first",
  "last"}``;
- ``send``: reads the peer's regexps, then ``await``s a send of ``n`` texts
  ``data <i>``: a regexp search, the MSG's bytes, appended to a buffer that
  is written once per 1024 texts; prints ``{"start", "end"}``.

trivy's figures against these say what its layers (bounds, events, cancel
points, fairness) cost, and how much room is left under them in Python.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable

import trio

RECEIVE_SIZE = 65536
SUBSCRIPTION = "^data (.*)"


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _accept() -> socket.socket:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    _emit(port=listener.getsockname()[1])
    conn, _ = await listener.accept()
    listener.close()
    sock = conn.detach()
    raw = socket.socket(fileno=sock)
    raw.setblocking(False)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def _send_all(sock: socket.socket, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def receive(n: int, mode: str) -> None:
    """Take ``n`` MSGs from the peer (see the module docstring)."""
    sock = await _accept()
    await _send_all(sock, f"6 1\x02Floor\n1 0\x02{SUBSCRIPTION}\n5 0\x02\n".encode())
    count = 0
    first = last = 0.0
    done = trio.Event()

    def on_match(*_groups: str) -> None:
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.monotonic()
        if count == n:
            last = time.monotonic()
            done.set()

    channel = _Channel()

    async def consume() -> None:
        async for groups in channel:
            on_match(*groups)
            if done.is_set():
                return

    async with trio.open_nursery() as nursery:
        if mode == "iter":
            nursery.start_soon(consume)
        nursery.start_soon(_read_msgs, sock, on_match if mode == "bind" else channel.put)
        await done.wait()
        nursery.cancel_scope.cancel()
    _emit(count=count, first=first, last=last)


class _Channel:
    """A deque one task appends to and another iterates, yielding once per 256."""

    def __init__(self) -> None:
        self._items: deque[tuple[str, ...]] = deque()
        self._arrived = trio.Event()
        self._waiting = False
        self._turn = 0

    def put(self, *groups: str) -> None:
        self._items.append(groups)
        if self._waiting:
            self._waiting = False
            self._arrived.set()

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> tuple[str, ...]:
        while not self._items:
            self._waiting, self._arrived = True, trio.Event()
            await self._arrived.wait()
            self._turn = 0
        self._turn += 1
        if self._turn > 256:
            self._turn = 0
            await trio.lowlevel.checkpoint()
        return self._items.popleft()


async def _read_msgs(sock: socket.socket, deliver: Callable[..., None]) -> None:
    pending = b""
    while True:
        data = await _recv(sock)
        if not data:
            return
        data = pending + data
        end = data.rfind(b"\n") + 1
        pending = data[end:]
        for line in data[:end].decode("utf-8", "surrogateescape").split("\n"):
            if line.startswith("2 "):
                head, _, params = line.partition("\x02")
                groups = params.split("\x03")
                groups.pop()
                if int(head[2:]) == 0:
                    deliver(*groups)
        await trio.lowlevel.checkpoint()


async def send(n: int) -> None:
    """Send ``n`` texts to the peer's one subscription (see the module docstring)."""
    sock = await _accept()
    await _send_all(sock, b"6 1\x02Floor\n5 0\x02\n")
    hello = b""
    while b"\n5 0" not in b"\n" + hello:
        hello += await _recv(sock)
    sub_id, regexp = next(
        (int(line[2 : line.index("\x02")]), line[line.index("\x02") + 1 :])
        for line in hello.decode().split("\n")
        if line.startswith("1 ")
    )
    search = re.compile(regexp).search
    head = b"2 %d\x02" % sub_id
    out = bytearray()
    calls = 0

    async def send_text(text: str) -> None:
        nonlocal out, calls
        calls += 1
        if calls == 1024:
            calls = 0
            data, out = out, bytearray()
            await _send_all(sock, data)
        found = search(text)
        if found is not None:
            out += head
            out += ("\x03".join(found.groups("")) + "\x03\n").encode("utf-8", "surrogateescape")

    start = time.monotonic()
    for i in range(n):
        await send_text(f"data {i}")
    await _send_all(sock, out)
    _emit(start=start, end=time.monotonic())
    while await _recv(sock):  # until the peer hangs up (then exit: callgrind counts at exit)
        pass


def main(argv: list[str]) -> int:
    """``ROLE N [MODE]``: run one floor process."""
    role, n = argv[0], int(argv[1])
    if role == "recv":
        trio.run(receive, n, argv[2] if len(argv) > 2 else "bind")
    else:
        trio.run(send, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

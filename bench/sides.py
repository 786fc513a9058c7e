"""``python -m bench.sides``: one side of each path at a time, facing a peer that costs nothing.

``python -m bench`` runs an implementation against itself, so each figure
mixes both ends: a 1→1 rate is that of the slower side, a round trip the sum
of both. Here every agent (``bench.agents``, trivy or ivy-python) faces a
peer written in blocking Python that speaks the protocol with no layers at
all (:class:`RawPeer`, in this process):

- ``echo``: the peer pings the agent's echo (a bound callback that sends the
  answer) one exchange at a time: the round trip, and the echo's CPU per
  exchange. The floors are the same peer against a raw echo process
  (``bench.floors``), blocking or trio;
- ``receive``: the peer writes ``n`` MSGs as fast as the agent takes them:
  the agent's receiving rate (trivy with ``async for``, ``receive_batch``
  and ``bind``; ivy-python's callback). The floors (``bench.side_floors``):
  a trio process that parses and delivers each MSG with no more than it
  must, to a callback or to a task's ``async for``;
- ``send``: the agent sends ``n`` texts to the peer, which reads and drops
  them: the sending rate, and the sender's CPU per text. The floor: a trio
  process that matches, encodes and buffers each text with no more than
  it must.

The rounds alternate the implementations, and each row is the median of its
rounds: a machine whose speed drifts (a shared VM) weighs on all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

from bench.floors import _samples_blocking
from bench.processes import LINE_TIMEOUT, Agent, AgentError, agents, free_bus

#: Exchanges, MSGs received and texts sent per round (a tenth more exchanges warm up).
SIZES = {"echo": 5_000, "receive": 200_000, "send": 200_000}
QUICK_SIZES = {"echo": 200, "receive": 2_000, "send": 2_000}
ROUNDS = 3
#: The receivers measured each round: (implementation, mode); "trio" is the floor.
RECEIVERS = (
    ("trivy", "iter"),
    ("trio", "iter"),
    ("trivy", "batch"),
    ("trivy", "bind"),
    ("trio", "bind"),
    ("ivy", "bind"),
)
T = TypeVar("T")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class RawPeer:
    """An Ivy peer in blocking Python: a hello, its regexps, then plain socket calls."""

    def __init__(self, port: int, name: str, regexps: tuple[str, ...] = ()) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(LINE_TIMEOUT * 2)
        subs = "".join(f"1 {i}\x02{regexp}\n" for i, regexp in enumerate(regexps))
        self.sock.sendall(f"6 1\x02{name}\n{subs}5 0\x02\n".encode())
        self._pending = b""

    def their_id(self, word: str) -> int:
        """The id of the agent's subscription containing ``word`` (read from its handshake)."""
        found = None
        while found is None or b"\n5 0" not in b"\n" + self._pending:
            self._pending += self.sock.recv(65536)
            for line in self._pending.split(b"\n"):
                if line.startswith(b"1 ") and word.encode() in line:
                    found = int(line[2 : line.index(b"\x02")])
        return found

    def count_msgs(self, n: int) -> None:
        """Read and drop until ``n`` MSGs of one group each came (each ends ETX, newline)."""
        data, seen = self._pending, 0
        while True:
            seen += data.count(b"\x03\n")
            if seen >= n:
                return
            tail = data[-1:]  # (an ETX at the end of a read, its newline in the next)
            data = self.sock.recv(1 << 20)
            if not data:
                raise AgentError(f"the agent hung up after {seen} of {n} MSGs")
            data = tail + data

    def close(self) -> None:
        """Hang up."""
        self.sock.close()


def _agent(start: Callable[..., Agent], impl: str, role: str, name: str, *options: str) -> Agent:
    agent = start(impl, role, free_bus(), name, *options)
    agent.expect("port")
    return agent


def echo(impl: str, n: int) -> dict[str, float]:
    """Round trips to ``impl``'s echo, and its CPU per exchange, in µs."""
    if impl in ("blocking", "trio"):
        return _raw_echo(impl, n)
    with agents() as start:
        agent = _agent(start, impl, "echo", "BenchEcho")
        agent.expect("ready")
        peer = RawPeer(agent.latest["port"], "RawPing", ("^pong ts=(.*)",))
        ping_id = peer.their_id("ping")
        warm = n // 10
        samples = _ping(peer, ping_id, warm, 0)
        cpu = cpu_seconds(agent.proc.pid)
        samples = _ping(peer, ping_id, n, warm)
        cpu = cpu_seconds(agent.proc.pid) - cpu
        peer.close()
    return {"median_us": statistics.median(samples), "cpu_us": cpu / n * 1e6}


def _ping(peer: RawPeer, ping_id: int, n: int, first: int) -> list[float]:
    sock, samples = peer.sock, []
    for i in range(first, first + n):
        want = b"2 0\x02%d\x03\n" % i
        t0 = time.perf_counter_ns()
        sock.sendall(b"2 %d\x02%d\x03\n" % (ping_id, i))
        got = b""
        while not got.endswith(want):
            got += sock.recv(4096)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def _raw_echo(kind: str, n: int) -> dict[str, float]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        command = [sys.executable, "-m", "bench.floors", "--echo", kind, str(port)]
        with subprocess.Popen(command) as process:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _samples_blocking(conn, n // 10)
                cpu = cpu_seconds(process.pid)
                samples = _samples_blocking(conn, n)
                cpu = cpu_seconds(process.pid) - cpu
                conn.shutdown(socket.SHUT_WR)
            process.wait(10)
    return {"median_us": statistics.median(samples), "cpu_us": cpu / n * 1e6}


@contextlib.contextmanager
def _floor(*args: str) -> Iterator[tuple[subprocess.Popen[str], Callable[[str], dict[str, Any]]]]:
    """A ``bench.side_floors`` process, and a reader of its next line holding a key."""
    command = [sys.executable, "-m", "bench.side_floors", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        stdout = process.stdout

        def expect(key: str) -> dict[str, Any]:
            for line in stdout:
                fields: dict[str, Any] = json.loads(line)
                if key in fields:
                    return fields
            raise AgentError(f"the floor process exited before {key!r}")

        try:
            yield process, expect
        finally:
            process.kill()


def receive(impl: str, mode: str, n: int) -> float:
    """MSGs a second ``impl``'s receiver takes from a peer that writes them at once
    (``impl`` "trio": the floor, ``bench.side_floors``)."""
    with contextlib.ExitStack() as stack:
        if impl == "trio":
            _process, expect = stack.enter_context(_floor("recv", str(n), mode))
            port = expect("port")["port"]
        else:
            start = stack.enter_context(agents())
            options = ("--mode", mode) if impl == "trivy" else ()
            agent = _agent(start, impl, "recv", "BenchRecv0", "-n", str(n), *options)
            agent.expect("ready")
            port, expect = agent.latest["port"], partial(agent.expect, timeout=LINE_TIMEOUT * 2)
        peer = RawPeer(port, "RawSend")
        data_id = peer.their_id("data")
        lines = b"".join(b"2 %d\x02%d\x03\n" % (data_id, i) for i in range(n))
        peer.sock.sendall(lines)
        result = expect("count")
        peer.close()
    if result["count"] != n:
        raise AgentError(f"{impl}: received {result['count']} of {n}")
    return float(n / (result["last"] - result["first"]))


def send(impl: str, n: int) -> dict[str, float]:
    """Texts a second ``impl``'s sender sends to a peer that drops them, and its CPU
    per text (``impl`` "trio": the floor, ``bench.side_floors``)."""
    with contextlib.ExitStack() as stack:
        if impl == "trio":
            process, expect = stack.enter_context(_floor("send", str(n)))
            port, pid = expect("port")["port"], process.pid
        else:
            agent = _agent(stack.enter_context(agents()), impl, "send", "BenchSend", "-n", str(n))
            expect = partial(agent.expect, timeout=LINE_TIMEOUT * 2)
            port, pid = agent.latest["port"], agent.proc.pid
        cpu = cpu_seconds(pid)
        peer = RawPeer(port, "BenchRecv0", ("^data (.*)",))
        peer.count_msgs(n)
        cpu = cpu_seconds(pid) - cpu
        sent = expect("start")
        peer.close()
    return {"rate": n / (sent["end"] - sent["start"]), "cpu_us": cpu / n * 1e6}


def _timed(label: str, measure: Callable[[], T]) -> T:
    started = time.monotonic()
    result = measure()
    print(f"  {label}: {result} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return result


def run(sizes: dict[str, int], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Every measurement ``rounds`` times, implementations alternating: row → impl → values."""
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for round_number in range(rounds):
        for impl in ("trivy", "ivy", "trio", "blocking"):
            result = _timed(f"echo [{impl}]", partial(echo, impl, sizes["echo"]))
            rows["echo: round trip median (µs)"][impl].append(result["median_us"])
            rows["echo: its CPU per exchange (µs)"][impl].append(result["cpu_us"])
        for impl, mode in RECEIVERS:
            name = "receive (msg/s)" if impl == "ivy" else f"receive, {mode} (msg/s)"
            rate = _timed(f"{name} [{impl}]", partial(receive, impl, mode, sizes["receive"]))
            rows[name][impl].append(rate)
        for impl in ("trivy", "ivy", "trio"):
            result = _timed(f"send [{impl}]", partial(send, impl, sizes["send"]))
            rows["send (texts/s)"][impl].append(result["rate"])
            rows["send: its CPU per text (µs)"][impl].append(result["cpu_us"])
        print(f"round {round_number + 1} of {rounds} done", file=sys.stderr)
    return rows


def table(rows: dict[str, dict[str, list[float]]]) -> str:
    """Medians, trivy against ivy-python (the receive rows: every trivy mode against ivy's)."""
    ivy_receive = statistics.median(rows["receive (msg/s)"]["ivy"])
    out = [f"{'side':34} {'trivy':>10} {'ivy-python':>10} {'ratio':>6}  floors"]
    for name, by_impl in rows.items():
        if name == "receive (msg/s)":
            continue
        trivy = statistics.median(by_impl["trivy"])
        ivy = statistics.median(by_impl["ivy"]) if "ivy" in by_impl else ivy_receive
        floors = "  ".join(
            f"{impl} {statistics.median(values):.1f}"
            for impl, values in by_impl.items()
            if impl not in ("trivy", "ivy")
        )
        ratio = f"{trivy / ivy:6.2f}" if ivy else "     -"  # (a smoke run: too short for CPU ticks)
        out.append(f"{name:34} {trivy:10,.1f} {ivy:10,.1f} {ratio}  {floors}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the rounds, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.sides", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, one round")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    print(table(run(sizes, 1 if args.quick else args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

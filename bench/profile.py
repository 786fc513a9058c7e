"""``python -m bench.profile SCENARIO``: where a message's time goes, trivy and ivy-python.

Scenarios (the profiled agent in brackets):

- ``receive``: one sender, one receiver reading with ``async for`` (trivy)
  or a callback (ivy-python) [the receiver];
- ``bind``: the same, trivy's receiver with a ``bind`` callback [the receiver];
- ``send``: the same [the sender];
- ``roundtrip``: ping/pong, one exchange at a time [the echo: wake-up, read,
  match, callback, write, sleep].

For each implementation, per message (or exchange):

- CPU time of the profiled process, from two runs of different lengths
  (the difference: start-up and leaving cancel out), without a profiler;
- system calls (``strace -f -c``, the same difference), with ``--syscalls``;
- instructions executed (``valgrind --tool=callgrind``, the same difference
  over shorter runs), with ``--instructions``: unlike time, a count that
  does not move with the machine's load, so a change of 1 % shows; the
  floor's count beside them (``bench.side_floors``' sender or receiver, or
  ``bench.floors``' trio echo, in front of a bare peer);
- the Python functions with the most time of their own (cProfile, every
  thread), grouped by package, then one by one. cProfile slows Python calls
  down: its µs add up to more than the CPU time; read them as shares.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path

from bench.processes import IMPLS, LINE_TIMEOUT, REPO, agents, free_bus
from bench.sides import RawPeer

#: Messages (exchanges for the round trip) of the long run; the short run has a fifth.
SIZES = {"receive": 100_000, "bind": 100_000, "send": 100_000, "roundtrip": 5_000}
QUICK_SIZES = {"receive": 2_000, "bind": 2_000, "send": 2_000, "roundtrip": 200}
#: ...under callgrind, about 50 times slower.
COUNTED_SIZES = {"receive": 50_000, "bind": 50_000, "send": 50_000, "roundtrip": 2_000}
#: How many times slower an agent runs under callgrind (about 50): the
#: trivy sender's burst interval is scaled by it, or back-to-back sends
#: would each look lone and take a path a real burst does not (one write a
#: text: 5,000 instructions more a text). Only the sender's: a round trip's
#: pong is lone, in a real run and under valgrind alike.
CALLGRIND_SLOWDOWN = 100.0
#: Functions listed one by one.
TOP = 15


def run_scenario(
    scenario: str, impl: str, n: int, wrap: list[str], profile: str | None, slowed: float = 1.0
) -> None:
    """One run; the profiled agent runs under ``wrap`` (strace) or with ``--profile``
    (and, a trivy agent that ``wrap`` slows down, with ``--slowed``)."""
    bus = free_bus()
    options = ["--profile", profile] if profile else []
    if slowed != 1.0 and impl == "trivy":
        options += ["--slowed", str(slowed)]
    with agents() as start:
        if scenario == "roundtrip":
            echo = start(impl, "echo", bus, "BenchEcho", *options, wrap=wrap)
            echo.expect("ready")
            start(impl, "ping", bus, "BenchPing", "-n", str(n)).expect("median_us", LINE_TIMEOUT)
            return
        mode = "bind" if scenario == "bind" else "iter"
        recv_options = options if scenario != "send" else []
        recv = start(
            impl, "recv", bus, "BenchRecv0", "-n", str(n), "--mode", mode, *recv_options,
            wrap=wrap if scenario != "send" else [],
        )  # fmt: skip
        recv.expect("ready")
        send_options = options if scenario == "send" else []
        start(
            impl, "send", bus, "BenchSend", "-n", str(n), *send_options,
            wrap=wrap if scenario == "send" else [],
        ).expect("start")  # fmt: skip
        recv.expect("count", LINE_TIMEOUT * 2)


def cpu_seconds(scenario: str, impl: str, n: int, workdir: Path) -> float:
    """CPU seconds of the profiled agent over a run (read from its exit report)."""
    path = workdir / f"{scenario}-{impl}-{n}-cpu"
    run_scenario(scenario, impl, n, [], f"cpu:{path}")
    return float(path.with_suffix(".cpu").read_text())


def syscalls(scenario: str, impl: str, n: int, workdir: Path) -> dict[str, int]:
    """System calls of the profiled agent over a run, by name."""
    path = workdir / f"{scenario}-{impl}-{n}.strace"
    run_scenario(scenario, impl, n, ["strace", "-f", "-c", "-o", str(path)], None)
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


def instructions(scenario: str, impl: str, n: int, workdir: Path) -> int:
    """Instructions the profiled agent executed over a run (callgrind's total)."""
    path = workdir / f"{scenario}-{impl}-{n}.callgrind"
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}"]
    slowed = CALLGRIND_SLOWDOWN if scenario == "send" else 1.0
    run_scenario(scenario, impl, n, wrap, None, slowed)
    return _total(path)


def floor_instructions(scenario: str, n: int, workdir: Path) -> int:
    """Instructions a floor executes over a run: ``bench.side_floors`` (send,
    receive, bind) or ``bench.floors``' trio echo, in front of a bare peer."""
    path = workdir / f"{scenario}-floor-{n}.callgrind"
    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}", sys.executable]
    if scenario == "roundtrip":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            echo = [*wrap, "-m", "bench.floors", "--echo", "trio", str(port)]
            with subprocess.Popen(echo, cwd=REPO, stderr=subprocess.DEVNULL) as process:
                conn, _ = listener.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    _exchanges(conn, n)
                    conn.shutdown(socket.SHUT_WR)
                process.wait(LINE_TIMEOUT)
    else:
        mode = "bind" if scenario == "bind" else "iter"
        role = ["send", str(n)] if scenario == "send" else ["recv", str(n), mode]
        floor = [*wrap, "-m", "bench.side_floors", *role]
        with subprocess.Popen(
            floor, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ) as process:
            assert process.stdout is not None
            port = json.loads(process.stdout.readline())["port"]
            if scenario == "send":
                peer = RawPeer(port, "BenchRecv0", ("^data (.*)",))
                peer.count_msgs(n)
            else:
                peer = RawPeer(port, "RawSend")
                data_id = peer.their_id("data")
                peer.sock.sendall(b"".join(b"2 %d\x02%d\x03\n" % (data_id, i) for i in range(n)))
            process.stdout.readline()  # its result: the run is over
            peer.close()
            process.wait(LINE_TIMEOUT)
    return _total(path)


def _exchanges(conn: socket.socket, n: int) -> None:
    """Send a short line ``n`` times, each once the previous one came back."""
    for _ in range(n):
        conn.sendall(b"ping ts=1234567\n")
        got = b""
        while not got.endswith(b"\n"):
            got += conn.recv(4096)


def _total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {path}")


def report_instructions(scenario: str, impl: str, n: int) -> None:
    """Print the instructions one implementation's profiled agent (or the
    floor, ``impl`` "floor") executes per message."""
    short = max(1, n // 5)
    count = floor_instructions if impl == "floor" else partial(instructions, impl=impl)
    with tempfile.TemporaryDirectory() as tmp:
        counted = count(scenario, n=n, workdir=Path(tmp))
        counted -= count(scenario, n=short, workdir=Path(tmp))
    print(f"\n{scenario}, {impl}: {counted / (n - short):,.0f} instructions per message")


def package_of(filename: str) -> str:
    """The package a profiled function belongs to, for the grouped view."""
    for name in ("trivy", "trio", "outcome", "ivy", "regex", "attrs"):
        if f"/{name}/" in filename:
            return name
    if filename.startswith("~"):
        return "builtins and C"
    return "stdlib and other"


def _by_size(values: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(values.items(), key=lambda item: -item[1])


def report(scenario: str, impl: str, n: int, quick: bool, want_syscalls: bool) -> None:
    """Print one implementation's breakdown of one scenario."""
    short = max(1, n // 5)
    extra = n - short
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cpu = cpu_seconds(scenario, impl, n, workdir) - cpu_seconds(scenario, impl, short, workdir)
        print(f"\n{scenario}, {impl}: CPU {1e6 * cpu / extra:.1f} µs per message")
        if want_syscalls:
            long = syscalls(scenario, impl, n, workdir)
            brief = syscalls(scenario, impl, short, workdir)
            per = {name: (count - brief.get(name, 0)) / extra for name, count in long.items()}
            total = sum(v for v in per.values() if v > 0)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in _by_size(per) if v >= 0.005)
            print(f"  system calls per message: {total:.2f} in all: {shown}")
        path = str(workdir / "profile")
        run_scenario(scenario, impl, n, [], path)
        stats = pstats.Stats(path)
        own: dict[str, float] = defaultdict(float)
        rows = []
        for (filename, line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
            calls, tottime = entry[1], entry[2]
            own[package_of(filename)] += tottime
            where = f"{Path(filename).name}:{line}" if line else filename
            rows.append((tottime, calls, f"{where}({function})"))
        total = sum(own.values())
        shares = ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in _by_size(own))
        print(f"  profiled: {1e6 * total / n:.1f} µs per message; by package: {shares}")
        for tottime, calls, name in sorted(rows, reverse=True)[: 5 if quick else TOP]:
            print(f"    {1e6 * tottime / n:7.2f} µs  {calls / n:6.2f} calls  {name}")


def main(argv: list[str] | None = None) -> int:
    """Command line: profile one scenario for both implementations."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("scenario", choices=sorted(SIZES))
    parser.add_argument(
        "--impl",
        choices=(*IMPLS, "floor"),
        action="append",
        help="only this one (repeatable; floor: with --instructions)",
    )
    parser.add_argument("--syscalls", action="store_true", help="count system calls (strace)")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions only (valgrind)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, seconds")
    args = parser.parse_args(argv)
    if args.syscalls and shutil.which("strace") is None:
        parser.error("--syscalls needs strace (Debian: apt-get install strace)")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (Debian: apt-get install valgrind)")
    impls = args.impl or (["trivy"] if args.scenario == "bind" else list(IMPLS))
    if "floor" in impls and not args.instructions:
        parser.error("--impl floor is counted with --instructions only")
    if args.instructions:
        impls = args.impl or [*impls, "floor"]
        n = (QUICK_SIZES if args.quick else COUNTED_SIZES)[args.scenario]
        for impl in impls:
            report_instructions(args.scenario, impl, n)
        return 0
    n = (QUICK_SIZES if args.quick else SIZES)[args.scenario]
    for impl in impls:
        report(args.scenario, impl, n, args.quick, args.syscalls)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The orchestrator: start agent processes, collect their JSON lines, tabulate.

Each scenario runs once with trivy agents and once with ivy-python agents,
on a private loopback bus (``127:PORT`` with a free UDP port). Agents are
separate processes (``python -m bench.agents``); the orchestrator
synchronises on their stdout lines only, bounds every wait with a timeout
and kills every agent it started when the scenario ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

#: Seconds allowed for one expected line of an agent.
LINE_TIMEOUT = 60.0
#: Seconds the agents of a scenario have, together, to leave before being killed.
LEAVE_TIMEOUT = 3.0
#: Seconds allowed for a group of agents to form a full mesh.
JOIN_TIMEOUT = 10.0
T = TypeVar("T")
IMPLS = ("trivy", "ivy")
REPO = Path(__file__).resolve().parent.parent


class AgentError(RuntimeError):
    """An agent failed, died or did not answer in time."""


class JoinIncomplete(AgentError):
    """Every agent is alive, but some never saw all the others in time."""


def free_bus() -> str:
    """A bus string ``127:PORT`` on a UDP port nobody uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127:{port}"


class Agent:
    """One agent process and the JSON lines it printed."""

    def __init__(
        self, impl: str, role: str, bus: str, name: str, *options: str, wrap: Sequence[str] = ()
    ) -> None:
        self.label = f"{impl}/{role}/{name}"
        command = [*wrap, sys.executable, "-m", "bench.agents", impl, role, bus, name, *options]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        #: Every key of every line read so far, with its latest value.
        self.latest: dict[str, Any] = {}
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                parsed = json.loads(line)
                self.latest.update(parsed)
                self.lines.put(parsed)
            except json.JSONDecodeError:
                self.stderr.append(f"stdout: {line}")
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-20]

    def expect(self, key: str, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The next line holding ``key`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AgentError(f"{self.label}: no {key!r} within {timeout:.1f} s") from None
            if line is None:
                raise AgentError(f"{self.label}: exited before {key!r}\n{''.join(self.stderr)}")
            if "error" in line:
                raise AgentError(f"{self.label}: {line['error']}\n{''.join(self.stderr)}")
            if key in line:
                return line

    def write(self, text: str) -> None:
        """Write ``text`` to the agent's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """Tell the agent to leave (the long-running roles wait for EOF)."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def kill(self, deadline: float) -> None:
        """Close stdin, let the agent leave until ``deadline``, then kill it."""
        self.close_stdin()
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def agents() -> Iterator[Callable[..., Agent]]:
    """A factory of agents, every one of which is killed on exit."""
    started: list[Agent] = []

    def start(*args: str, wrap: Sequence[str] = ()) -> Agent:
        agent = Agent(*args, wrap=wrap)
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.close_stdin()
        deadline = time.monotonic() + LEAVE_TIMEOUT
        for agent in started:
            agent.kill(deadline)


# ================================================================ scenarios
def throughput(impl: str, n: int, receivers: int = 1, mode: str = "iter", extra: int = 0) -> float:
    """Messages per second from the sender's first send to the last receipt.

    With ``extra`` decoys the receiver subscribes ``^word0..`` to
    ``^word<extra>`` and the sender's texts match the last one only.
    """
    bus = free_bus()
    regexp, prefix = (rf"^word{extra} (.*)", f"word{extra}") if extra else (r"^data (.*)", "data")
    with agents() as start:
        recvs = []
        for k in range(receivers):
            recv = start(
                impl,
                "recv",
                bus,
                f"BenchRecv{k}",
                "-n",
                str(n),
                "--mode",
                mode,
                "--regexp",
                regexp,
                "--extra",
                str(extra),
            )
            recv.expect("ready")
            recvs.append(recv)
        sender = start(
            impl,
            "send",
            bus,
            "BenchSend",
            "-n",
            str(n),
            "--prefix",
            prefix,
            "--peers",
            str(receivers),
            "--subs",
            str(extra + 1),
        )
        sent = sender.expect("start")
        results = [recv.expect("count", timeout=LINE_TIMEOUT * 2) for recv in recvs]
    for result in results:
        if result["count"] != n:
            raise AgentError(f"{impl}: received {result['count']} of {n}")
    elapsed = max(r["last"] for r in results) - sent["start"]
    return float(n * receivers / elapsed)


#: A regexp trivy's guard sends to the timed engine (a variable repeat inside
#: a repeat), for texts that match it without trouble.
GUARDED_REGEXP = r"^(?:\w+ )*(\d+)$"


def send_rate(impl: str, n: int, extra: int, regexp: str | None = None, hostile: int = 0) -> float:
    """Sends per second at the sender, texts matching 1 of ``extra + 1`` regexps.

    With ``regexp``, the receiver subscribes that instead (and the texts,
    ``word<extra> <i>``, must match it). With ``hostile``, the receiver
    also subscribes that many regexps of the shapes that broke the bounds
    (the sender refuses or bounds them: it waits for the receiver's last one).
    """
    bus = free_bus()
    main = regexp or rf"^word{extra} (.*)"
    with agents() as start:
        recv = start(
            impl,
            "recv",
            bus,
            "BenchRecv0",
            "-n",
            str(n),
            "--regexp",
            main,
            "--extra",
            str(extra),
            "--hostile",
            str(hostile),
        )
        recv.expect("ready")
        sender = start(
            impl,
            "send",
            bus,
            "BenchSend",
            "-n",
            str(n),
            "--prefix",
            f"word{extra}",
            "--subs",
            str(extra + 1),
            *(("--wait-regexp", main) if hostile else ()),
        )
        sent = sender.expect("start", timeout=LINE_TIMEOUT * 2)
        result = recv.expect("count", timeout=LINE_TIMEOUT * 2)
    if result["count"] != n:
        raise AgentError(f"{impl}: received {result['count']} of {n}")
    return float(n / (sent["end"] - sent["start"]))


def round_trip(impl: str, n: int) -> dict[str, float]:
    """Median and p99 of ``n`` ping/pong exchanges, in microseconds."""
    bus = free_bus()
    with agents() as start:
        echo = start(impl, "echo", bus, "BenchEcho")
        echo.expect("ready")
        pinger = start(impl, "ping", bus, "BenchPing", "-n", str(n))
        result = pinger.expect("median_us", timeout=LINE_TIMEOUT * 2)
    return {"median_us": result["median_us"], "p99_us": result["p99_us"]}


def join(impl: str, count: int, timeout: float = JOIN_TIMEOUT) -> float:
    """Seconds from ``go`` to every one of ``count`` agents seeing all others
    (:class:`JoinIncomplete` if they have not after ``timeout`` seconds)."""
    bus = free_bus()
    with agents() as start:
        group = [
            start(impl, "join", bus, f"BenchJoin{k}", "--peers", str(count - 1))
            for k in range(count)
        ]
        for agent in group:
            agent.expect("loaded")
        go = time.monotonic()
        for agent in group:
            agent.write("go\n")
        deadline = time.monotonic() + timeout
        try:
            joined = [
                agent.expect("joined", max(0.0, deadline - time.monotonic()))["joined"]
                for agent in group
            ]
        except AgentError as exc:
            seen = [agent.latest.get("seen", 0) for agent in group]
            if all(agent.proc.poll() is None for agent in group):
                pairs = sum(seen)
                raise JoinIncomplete(
                    f"mesh incomplete after {timeout:.0f} s: {pairs} of "
                    f"{count * (count - 1)} directed links ready; per agent: {seen}"
                ) from None
            raise AgentError(f"{exc}; peers seen by each agent: {seen}") from None
    return float(max(joined) - go)


def join_ms(impl: str, count: int, timeout: float = JOIN_TIMEOUT) -> float:
    """:func:`join`, in milliseconds."""
    return 1000 * join(impl, count, timeout)


def memory(impl: str, subs: int) -> dict[str, int]:
    """VmRSS (KiB) of an agent alone on its bus, idle then with ``subs`` bindings."""
    bus = free_bus()
    with agents() as start:
        agent = start(impl, "mem", bus, "BenchMem", "-n", str(subs))
        idle = agent.expect("idle_kib")["idle_kib"]
        loaded = agent.expect("subs_kib")["subs_kib"]
    return {"idle_kib": idle, "subs_kib": loaded}


# ==================================================================== suite
@dataclass
class Row:
    """One line of the table: a metric measured for both implementations."""

    scenario: str
    unit: str
    higher_is_better: bool
    values: dict[str, float] = field(default_factory=dict)
    #: Why a value is missing, when that is a result rather than a failure.
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """trivy / ivy-python (None when either is missing or zero)."""
        trivy, ivy = self.values.get("trivy"), self.values.get("ivy")
        if not trivy or not ivy:
            return None
        return trivy / ivy


@dataclass
class Sizes:
    """The sizes of one run (full or quick)."""

    messages: int
    exchanges: int
    decoy_messages: int
    decoys: int
    fanout: int
    join_agents: int
    subscriptions: int
    #: rounds of the 1→1 throughput scenario; each row shows their median
    #: (rounds alternate the implementations so they share the machine's
    #: moods)
    rounds: int


FULL = Sizes(100_000, 2000, 20_000, 999, 4, 20, 1000, 5)
QUICK = Sizes(5000, 200, 1000, 999, 4, 5, 1000, 1)


def run_suite(
    sizes: Sizes, only: set[str] | None, log: Callable[[str], None], failures: list[str]
) -> list[Row]:
    """Run every scenario (or those in ``only``) for both implementations.

    A measurement that fails is logged, appended to ``failures`` and left
    out of its row; the other measurements still run.
    """
    rows: list[Row] = []

    def want(name: str) -> bool:
        return only is None or name in only

    def attempt(label: str, fn: Callable[[], T]) -> T | None:
        began = time.monotonic()
        try:
            result = fn()
        except AgentError as exc:
            failures.append(f"{label}: {exc}")
            log(f"  {label}: FAILED: {exc}")
            return None
        shown = f"{result:.6g}" if isinstance(result, float) else str(result)
        log(f"  {label}: {shown} ({time.monotonic() - began:.1f} s)")
        return result

    def measure(row: Row, impl: str, fn: Callable[[], float]) -> None:
        result = attempt(f"{row.scenario} [{impl}] {row.unit}", fn)
        if result is not None:
            row.values[impl] = result

    def split(rows_of: dict[str, tuple[str, str]], results: dict[str, dict[str, Any]]) -> None:
        """Rows (one per key of the results) from per-implementation dicts."""
        for key, (scenario, unit) in rows_of.items():
            row = Row(scenario, unit, False)
            row.values = {impl: float(res[key]) for impl, res in results.items()}
            rows.append(row)

    if want("throughput"):
        n = sizes.messages
        modes = (("async for", "iter"), ("receive_batch", "batch"), ("bind", "bind"))
        samples: dict[str, list[float]] = {}
        for round_number in range(sizes.rounds):
            for label, impl, mode in [("ivy", "ivy", "iter")] + [(m, "trivy", m) for _, m in modes]:
                name = f"throughput 1→1 [{impl}{'' if impl == 'ivy' else ' ' + mode}]"
                rate = attempt(
                    f"{name} round {round_number + 1}", partial(throughput, impl, n, mode=mode)
                )
                if rate is not None:
                    samples.setdefault(label, []).append(rate)
        for label, mode in modes:
            row = Row(f"throughput 1→1, trivy {label}", "msg/s", True)
            for impl, key in (("trivy", mode), ("ivy", "ivy")):
                if samples.get(key):
                    row.values[impl] = statistics.median(samples[key])
            rows.append(row)
    if want("roundtrip"):
        trips = {
            impl: attempt(f"round trip [{impl}]", partial(round_trip, impl, sizes.exchanges))
            for impl in IMPLS
        }
        split(
            {"median_us": ("round trip median", "µs"), "p99_us": ("round trip p99", "µs")},
            {impl: res for impl, res in trips.items() if res is not None},
        )
    if want("fanout"):
        row = Row(f"fan-out 1→{sizes.fanout} (deliveries)", "msg/s", True)
        for impl in IMPLS:
            measure(row, impl, partial(throughput, impl, sizes.messages, sizes.fanout))
        rows.append(row)
    if want("regexps"):
        row = Row(f"send rate, receiver with {sizes.decoys + 1} regexps", "msg/s", True)
        for impl in IMPLS:
            measure(row, impl, partial(send_rate, impl, sizes.decoy_messages, sizes.decoys))
        rows.append(row)
    if want("hostile"):
        # trivy only: ivy-python's sender would spend seconds a send on them
        row = Row(
            f"send rate, receiver with {sizes.decoys + 1} regexps of hostile shapes", "msg/s", True
        )
        rate = partial(send_rate, "trivy", sizes.decoy_messages, 0, None, sizes.decoys)
        measure(row, "trivy", rate)
        row.notes["ivy"] = "not run: seconds a send"
        rows.append(row)
    if want("guard"):
        row = Row("send rate, receiver with a guarded regexp", "msg/s", True)
        for impl in IMPLS:
            rate = partial(send_rate, impl, sizes.decoy_messages, 0, GUARDED_REGEXP)
            measure(row, impl, rate)
        rows.append(row)
    if want("join"):
        row = Row(f"join: {sizes.join_agents} agents full mesh", "ms", False)
        for impl in IMPLS:
            if impl == "ivy":  # a known ivy-python limitation: a result, not a failure
                try:
                    row.values[impl] = join_ms(impl, sizes.join_agents)
                    log(f"  {row.scenario} [{impl}] ms: {row.values[impl]:.6g}")
                except JoinIncomplete as exc:
                    row.notes[impl] = str(exc)
                    log(f"  {row.scenario} [{impl}]: {exc}")
                continue
            measure(row, impl, partial(join_ms, impl, sizes.join_agents))
        rows.append(row)
    if want("memory"):
        rss = {
            impl: attempt(f"memory [{impl}] KiB", partial(memory, impl, sizes.subscriptions))
            for impl in IMPLS
        }
        split(
            {
                "idle_kib": ("RSS, idle", "KiB"),
                "subs_kib": (f"RSS, {sizes.subscriptions} bindings", "KiB"),
            },
            {impl: res for impl, res in rss.items() if res is not None},
        )
    return rows


def cell(row: Row, impl: str) -> str:
    """One value of the table: the number, ``incomplete`` or ``failed``."""
    if impl in row.values:
        return f"{row.values[impl]:,.1f}"
    return "incomplete" if impl in row.notes else "failed"


def format_table(rows: list[Row]) -> str:
    """The rows as a plain-text table."""
    header = ("scenario", "unit", "trivy", "ivy-python", "ratio")
    body = []
    for row in rows:
        ratio = row.ratio
        better = "higher" if row.higher_is_better else "lower"
        body.append(
            (
                row.scenario,
                f"{row.unit} ({better} better)",
                cell(row, "trivy"),
                cell(row, "ivy"),
                "-" if ratio is None else f"{ratio:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for i, cells in enumerate([header, *body]):
        lines.append(
            "  ".join(
                c.ljust(w) if j < 2 else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the suite, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, seconds")
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO / "bench" / "results" / "latest.json",
        help="where to write the results (default bench/results/latest.json)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[
            "throughput",
            "roundtrip",
            "fanout",
            "regexps",
            "hostile",
            "guard",
            "join",
            "memory",
        ],
        help="run this scenario only (repeatable)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.monotonic()
    failures: list[str] = []
    only = set(args.only) if args.only else None
    rows = run_suite(sizes, only, lambda s: print(s, flush=True), failures)
    elapsed = time.monotonic() - began
    print()
    print(format_table(rows))
    for row in rows:
        for impl, note in row.notes.items():
            print(f"note: {row.scenario} [{impl}]: {note}")
    print(f"\n{'quick' if args.quick else 'full'} run: {elapsed:.1f} s")
    report = {
        "quick": args.quick,
        "sizes": sizes.__dict__,
        "elapsed_s": elapsed,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "failures": failures,
        "rows": [
            {
                "scenario": row.scenario,
                "unit": row.unit,
                "higher_is_better": row.higher_is_better,
                "trivy": row.values.get("trivy"),
                "ivy_python": row.values.get("ivy"),
                "ratio": row.ratio,
                "notes": row.notes,
            }
            for row in rows
        ],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.json}")
    if failures:
        print(f"\n{len(failures)} measurement(s) FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0

"""The orchestrator: run the scenarios for both implementations, tabulate.

Each scenario (:mod:`bench.scenarios`) runs once with trivy agents and once
with ivy-python agents (:mod:`bench.processes`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench.processes import IMPLS, REPO, AgentError
from bench.scenarios import (
    GUARDED_REGEXP,
    JoinIncomplete,
    join_ms,
    memory,
    round_trip,
    send_rate,
    throughput,
)

T = TypeVar("T")


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
    if want("compat"):
        # the same ivy-python program (bench.agents_ivy), under trivy.compat
        # ("trivy") and under ivy-python: sends from its main thread, a
        # callback that answers
        row = Row("ivy-python program on trivy.compat: throughput 1→1", "msg/s", True)
        for impl, agent in (("trivy", "compat"), ("ivy", "ivy")):
            measure(row, impl, partial(throughput, agent, sizes.messages))
        rows.append(row)
        trips = {
            impl: attempt(f"round trip [{agent}]", partial(round_trip, agent, sizes.exchanges))
            for impl, agent in (("trivy", "compat"), ("ivy", "ivy"))
        }
        split(
            {
                "median_us": ("ivy-python program on trivy.compat: round trip median", "µs"),
                "p99_us": ("ivy-python program on trivy.compat: round trip p99", "µs"),
            },
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
            "compat",
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

"""``python -m bench.scale``: trivy and ivy-python as the bus grows.

Three rows, both implementations in the same run:

- **join**: 100 agents started at once, until every one sees the 99 others
  (a full mesh of 9,900 directed links);
- **fan-out 1→16**: one sender, 16 receivers, deliveries a second;
- **10,000 regexps**: the sender's rate when its one receiver subscribed
  10,000 regexps (the texts match the last one).

``--quick`` runs small sizes, in seconds (CI's smoke run).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from bench.processes import IMPLS, AgentError
from bench.runner import Row, format_table
from bench.scenarios import JoinIncomplete, join_ms, send_rate, throughput

#: (agents joining, receivers of the fan-out, its messages, regexps, sends)
FULL = (100, 16, 20_000, 10_000, 2_000)
QUICK = (10, 4, 1_000, 1_000, 200)
#: Seconds the 100 agents have to form their mesh (their processes start first).
JOIN_TIMEOUT = 60.0


def main(argv: list[str] | None = None) -> int:
    """Command line: run the three rows, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    args = parser.parse_args(argv)
    joining, receivers, messages, regexps, sends = QUICK if args.quick else FULL
    rows = [
        Row(f"join: {joining} agents full mesh", "ms", False),
        Row(f"fan-out 1→{receivers} (deliveries)", "msg/s", True),
        Row(f"send rate, receiver with {regexps:,} regexps", "msg/s", True),
    ]
    runs = [
        partial(join_ms, count=joining, timeout=JOIN_TIMEOUT),
        partial(throughput, n=messages, receivers=receivers),
        partial(send_rate, n=sends, extra=regexps - 1),
    ]
    failed = 0
    for row, run in zip(rows, runs, strict=True):
        for impl in IMPLS:
            try:
                value = run(impl)
            except JoinIncomplete as exc:  # a result: ivy-python's mesh may not form
                row.notes[impl] = str(exc)
            except AgentError as exc:
                if impl == "ivy":  # (the same limitation: its sender never sees them all)
                    row.notes[impl] = f"did not run: {exc}"
                    print(f"  {row.scenario} [{impl}]: {row.notes[impl][:300]}")
                    continue
                failed += 1
                print(f"  {row.scenario} [{impl}]: FAILED: {exc}", file=sys.stderr)
                continue
            else:
                row.values[impl] = value
            print(f"  {row.scenario} [{impl}]: {row.values.get(impl, row.notes.get(impl))}")
    print()
    print(format_table(rows))
    for row in rows:
        for impl, note in row.notes.items():
            print(f"note: {row.scenario} [{impl}]: {note[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

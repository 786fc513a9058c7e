"""Record and replay: does the recorder keep up, and how exact is replay timing?

    python -m bench.recording            # full run
    python -m bench.recording --quick    # smoke run (CI): small sizes, nothing asserted

1. **Recorder throughput.** A sender agent sends N texts as fast as trivy's
   backpressure lets it (the 1→1 throughput scenario's load) to a bus where
   ``trivy.recording.record`` is the only subscriber, in its own process
   (``python -m trivy record``); reports messages per second from the first
   send to the last record written, and how many were lost (must be 0).
2. **Replay timing.** A recording of N texts 5 ms apart is replayed at 1×,
   10× and as fast as possible to a receiver; reports how late each text
   left against its schedule (p50 and p99, in ms; the schedule is kept
   against the start, so errors do not add up) and, at full speed, the
   rate in texts per second.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import trivy
from trivy.recording import Record, load_recording, replay
from trivy.testing import free_bus_address, wait_for_subscription


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def recorder_throughput(n: int) -> dict[str, float | str]:
    bus = free_bus_address()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "load.jsonl"
        async with trivy.open_ivy_bus("SENDER", bus) as sender:
            recorder = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trivy", "record", str(path), "-b", bus],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                with trio.fail_after(120):
                    peer = await wait_for_subscription(sender, "TRIVYRECORD", "^(.*)$")
                    start = time.monotonic()
                    for i in range(n):
                        await sender.send(f"data {i}")
                    await sender.ping(peer)  # it has read everything before the PONG
                    sender.send_die(peer)  # it writes what it has, closes the file
                    await recorder.wait()
                    elapsed = time.monotonic() - start
            finally:
                recorder.kill()
        _, records = load_recording(path)
    recorded = sum(1 for r in records if r.event == "msg")
    return {"messages": n, "recorded": recorded, "lost": n - recorded, "rate": n / elapsed}


async def replay_timing(n: int, speed: float) -> dict[str, float | str]:
    records = [Record(i * 0.005, "msg", "PLAYER", "127.0.0.1", text=f"data {i}") for i in range(n)]
    bus = free_bus_address()
    got = 0
    async with trivy.open_ivy_bus("RECEIVER", bus) as receiver, trio.open_nursery() as nursery:
        sub = receiver.subscribe("^data (.*)")

        async def count() -> None:
            nonlocal got
            async for _ in sub:
                got += 1
                if got == n:
                    return

        nursery.start_soon(count)
        start = time.monotonic()
        with trio.fail_after(60 + n * 0.005 / min(speed, 1)):
            stats = await replay(records, bus, speed=speed, wait_for=["RECEIVER"])
        elapsed = time.monotonic() - start
    late_ms = [x * 1000 for x in stats.lateness]
    row: dict[str, float | str] = {
        "speed": speed if math.isfinite(speed) else "max",
        "texts": n,
        "received": got,
        "rate": n / elapsed,
    }
    if math.isfinite(speed):  # (as fast as possible, there is no schedule to be late on)
        row["late_p50_ms"] = _percentile(late_ms, 0.5)
        row["late_p99_ms"] = _percentile(late_ms, 0.99)
    return row


async def main(quick: bool) -> list[dict[str, float | str]]:
    recorded = await recorder_throughput(2_000 if quick else 100_000)
    results: list[dict[str, float | str]] = [{"scenario": "record", **recorded}]
    for speed in (1.0, 10.0, math.inf):
        n = 100 if quick else (2_000 if speed == 1.0 else 10_000)
        results.append({"scenario": "replay", **await replay_timing(n, speed)})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    args = parser.parse_args()
    for row in trio.run(main, args.quick):
        print(json.dumps(row))

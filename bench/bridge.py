"""The bridge: what going through an MQTT broker costs, against one bus.

    python -m bench.bridge            # full run
    python -m bench.bridge --quick    # smoke run (CI): small sizes, nothing compared

Starts a mosquitto on a free loopback port, and two trivy agents, PINGER
and PONGER (in this process). Each scenario runs twice: both agents on one
bus, then each on a bus of its own (two sites), joined by two
``python -m trivy bridge`` processes:

1. **Round trip.** PINGER sends ``ping N``, PONGER answers ``pong N``, one
   at a time; the median and p99 in µs.
2. **Throughput.** PINGER sends N texts as fast as ``send()`` lets it,
   PONGER counts them; texts per second from the first send to the last
   received (every text must arrive).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import trivy
from trivy.testing import free_bus_address, wait_for_subscription


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def mosquitto() -> AsyncIterator[int]:
    """A broker on loopback, once it says it runs; its port."""
    port = _free_tcp_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "mosquitto.conf"
        # (queues sized for a benchmark's bursts, not mosquitto's 1,000; no Nagle)
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            "log_type information\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        process = await trio.lowlevel.open_process(
            [binary, "-c", str(config)], stderr=subprocess.PIPE
        )
        try:
            assert process.stderr is not None
            said = b""
            with trio.fail_after(10):
                while b"running" not in said:
                    said += await process.stderr.receive_some(4096)
            yield port
        finally:
            process.kill()
            await process.wait()


@asynccontextmanager
async def bridged(broker: int) -> AsyncIterator[tuple[str, str]]:
    """Two buses joined by two bridge processes; the buses."""
    buses = free_bus_address(), free_bus_address()
    processes = []
    try:
        for bus, site in zip(buses, ("one", "two"), strict=True):
            command = [sys.executable, "-m", "trivy", "bridge", "-b", bus, "--site", site,
                       "--broker", f"mqtt://127.0.0.1:{broker}"]  # fmt: skip
            processes.append(await trio.lowlevel.open_process(command))
        yield buses
    finally:
        for process in processes:
            process.kill()
            await process.wait()


async def round_trip(bus_a: str, bus_b: str, n: int) -> dict[str, float]:
    async with (
        trivy.open_ivy_bus("PINGER", bus_a) as pinger,
        trivy.open_ivy_bus("PONGER", bus_b) as ponger,
    ):

        async def answer(_peer: Any, number: str) -> None:
            await ponger.send(f"pong {number}")

        ponger.bind(answer, r"^ping (\d+)$")
        async with pinger.subscribe(r"^pong (\d+)$") as pongs:
            with trio.fail_after(60):
                await wait_for_subscription(pinger, "PONGER", r"^ping (\d+)$")
                await wait_for_subscription(ponger, "PINGER", r"^pong (\d+)$")
            samples = []
            for i in range(n):
                start = time.perf_counter_ns()
                await pinger.send(f"ping {i}")
                with trio.fail_after(10):
                    assert (await pongs.receive()).groups == (str(i),)
                samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "median_us": statistics.median(samples),
        "p99_us": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
    }


async def throughput(bus_a: str, bus_b: str, n: int) -> float:
    async with (
        trivy.open_ivy_bus("SENDER", bus_a) as sender,
        trivy.open_ivy_bus("COUNTER", bus_b) as counter,
        counter.subscribe(r"^data (\d+)") as data,
    ):
        with trio.fail_after(60):
            await wait_for_subscription(sender, "COUNTER", r"^data (\d+)")
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for i in range(n):
                    await sender.send(f"data {i}")

            nursery.start_soon(send_all)
            with trio.fail_after(120):
                for i in range(n):
                    assert (await data.receive()).groups == (str(i),)
        return n / (time.perf_counter() - start)


async def run(quick: bool) -> dict[str, Any]:
    pings, texts = (50, 500) if quick else (2000, 50_000)
    results: dict[str, Any] = {"pings": pings, "texts": texts}
    async with mosquitto() as broker:
        bus = free_bus_address()
        results["one bus"] = await round_trip(bus, bus, pings)
        results["one bus"]["texts_per_s"] = await throughput(bus, bus, texts)
        async with bridged(broker) as (one, two):
            results["bridged"] = await round_trip(one, two, pings)
            results["bridged"]["texts_per_s"] = await throughput(one, two, texts)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    args = parser.parse_args(argv)
    results = trio.run(run, args.quick)
    print(json.dumps(results))
    if not args.quick:
        print("| path | round trip median (µs) | p99 (µs) | texts/s |\n|---|---|---|---|")
        for path in ("one bus", "bridged"):
            row = results[path]
            print(f"| {path} | {row['median_us']:.0f} | {row['p99_us']:.0f} "
                  f"| {row['texts_per_s']:,.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

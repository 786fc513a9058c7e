"""The monitor under load: does it keep up, stay flat in memory, keep its page's pace?

    python -m bench.monitor            # 50 agents, 10,000 texts/s, 60 s
    python -m bench.monitor --quick    # smoke run (CI): 5 agents, 500 texts/s, 3 s

The monitor runs as a command (``python -m trivy monitor``, its own
process); N trivy agents in this process send texts of 10 kinds with
numeric fields, paced to a total rate. A page is played by an HTTP client
reading the event stream. Reported: texts sent against texts the monitor
counted (after every agent's PING, so it has read them all); the page's
updates per second; the monitor's RSS over the run (every 5 s).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import trio

import trivy
from trivy.testing import free_bus_address, wait_for_subscription


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def sender(
    bus: trivy.IvyBus, index: int, rate: float, seconds: float, sent: list[int]
) -> None:
    """``rate`` texts per second for ``seconds``, in bursts of 10 on a schedule."""
    start = trio.current_time()
    total = int(rate * seconds)
    for i in range(0, total, 10):
        await trio.sleep_until(start + i / rate)
        for j in range(i, min(i + 10, total)):
            await bus.send(f"K{j % 10} {j} {index + (j % 100) / 10}")
            sent[0] += 1


class Page:
    """Reads the feed as a page does: counts updates, keeps the monitor's count."""

    def __init__(self) -> None:
        self.updates = 0
        self.texts = 0
        self.target = float("inf")
        self.caught_up = trio.Event()

    async def read(self, url: str) -> None:
        async with httpx.AsyncClient(timeout=None) as client, client.stream("GET", url) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    self.updates += 1
                    self.texts = json.loads(line[6:])["texts"]
                    if self.texts >= self.target:
                        self.caught_up.set()


async def run(agents: int, rate: float, seconds: float) -> dict[str, Any]:
    bus, port = free_bus_address(), _free_port()
    command = [sys.executable, "-m", "trivy", "monitor", "-b", bus, "--port", str(port)]
    monitor = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    try:
        assert monitor.stderr is not None
        said = b""
        with trio.fail_after(30):
            while b"the monitor is at" not in said:
                said += await monitor.stderr.receive_some(4096)
        result: dict[str, Any] = {"agents": agents, "rate": rate, "seconds": seconds}
        async with trio.open_nursery() as nursery:
            buses = [
                await nursery.start(_agent, f"A{i}", bus) for i in range(agents)
            ]  # (each an agent of its own)
            with trio.fail_after(60):
                for agent in buses:
                    await wait_for_subscription(agent, "TRIVYMONITOR", "^(.*)$")
            viewer = Page()
            nursery.start_soon(viewer.read, f"http://127.0.0.1:{port}/api/events")
            rss = [rss_mib(monitor.pid)]
            sent = [0]
            started = time.monotonic()
            sampling = trio.CancelScope()
            nursery.start_soon(_sample_rss, monitor.pid, rss, sampling)
            async with trio.open_nursery() as senders:
                for i, agent in enumerate(buses):
                    senders.start_soon(sender, agent, i, rate / agents, seconds, sent)
            elapsed = time.monotonic() - started
            sampling.cancel()
            for agent in buses:  # (its PONG: the monitor read everything before)
                await agent.ping(await agent.wait_for_peer("TRIVYMONITOR"))
            updates_before = viewer.updates
            viewer.target = sent[0]
            with trio.move_on_after(10):
                await viewer.caught_up.wait()
            rss.append(rss_mib(monitor.pid))
            result.update(
                sent=sent[0],
                shown=viewer.texts,
                send_rate=round(sent[0] / elapsed),
                page_updates_per_s=round(updates_before / elapsed, 2),
                rss_mib=[round(r, 1) for r in rss],
            )
            nursery.cancel_scope.cancel()
        return result
    finally:
        monitor.kill()
        await monitor.wait()


async def _sample_rss(pid: int, rss: list[float], scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await trio.sleep(5)
            rss.append(rss_mib(pid))


async def _agent(name: str, bus: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with trivy.open_ivy_bus(name, bus) as agent:
        task_status.started(agent)
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    agents, rate, seconds = (5, 500.0, 3.0) if args.quick else (50, 10_000.0, args.seconds)
    result = trio.run(run, agents, rate, seconds)
    print(json.dumps(result))
    return 0 if result["shown"] == result["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())

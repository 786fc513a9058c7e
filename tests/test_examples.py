"""The examples run: each is started as a program and talked to over a bus."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import trio

import trivy
from trivy.testing import wait_for_subscription

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 15


async def _start(script: str, bus: str, *args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / script), "--bus", bus, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _lines_until(process: trio.Process, wanted: str) -> list[str]:
    """Read the program's output until a line containing ``wanted``."""
    assert process.stdout is not None
    buffer, lines = b"", []
    while True:
        chunk = await process.stdout.receive_some()
        assert chunk, f"the example ended before printing {wanted!r}: {lines}"
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete]
        if any(wanted in line for line in lines):
            return lines


async def _die(bus: trivy.IvyBus, name: str, process: trio.Process) -> None:
    bus.send_die(await bus.wait_for_peer(name))
    assert await process.wait() == 0


async def test_hello_agent_answers(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Tester", bus) as me:
            his = me.subscribe(r"^hi (.*)")
            process = await _start("hello_agent.py", bus)
            try:
                await wait_for_subscription(me, "HelloAgent", r"^hello (\S+)")
                assert await me.send("hello world") == 1
                assert (await his.receive()).groups == ("world",)
                await _die(me, "HelloAgent", process)
            finally:
                process.kill()


async def test_clock_ticks_until_told_to_die(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Tester", bus) as me:
            ticks = me.subscribe(r"^TIME (\d+\.\d+)$")
            process = await _start("clock.py", bus, "--interval", "0.05")
            try:
                first, second = await ticks.receive(), await ticks.receive()
                assert float(second.groups[0]) >= float(first.groups[0])
                await _die(me, "Clock", process)
            finally:
                process.kill()


async def test_monitor_reports_joins_and_subscriptions(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Tester", bus) as me:
            process = await _start("monitor.py", bus)
            try:
                await me.wait_for_peer("Monitor")
                me.subscribe("^watched (.*)")
                lines = await _lines_until(process, "Tester subscribes")
                assert any(line.startswith("Tester connected from 127.0.0.1") for line in lines)
                assert "Tester subscribes 0: ^watched (.*)" in lines
                await _die(me, "Monitor", process)
            finally:
                process.kill()


async def test_telemetry_publisher_and_running_average(bus: str) -> None:
    readings: dict[str, list[float]] = {"north": [], "south": []}
    averages: list[tuple[str, float, int]] = []
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Tester", bus) as me:
            temps = me.subscribe(r"^TEMP (\w+) (\S+)$")
            avgs = me.subscribe(r"^TEMP_AVG (\w+) (\S+) (\d+)$")
            averager = await _start("telemetry.py", bus, "average")
            publisher = await _start("telemetry.py", bus, "publish", "--interval", "0.05")
            try:

                async def collect_readings() -> None:
                    async for match in temps:
                        readings[match.groups[0]].append(float(match.groups[1]))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect_readings)
                    async for match in avgs:
                        sensor, mean, count = match.groups
                        averages.append((sensor, float(mean), int(count)))
                        if sum(1 for s, _, n in averages if n >= 5) >= 2:
                            break
                    await _die(me, "Thermometer", publisher)
                    nursery.cancel_scope.cancel()
                await _die(me, "Averager", averager)
            finally:
                publisher.kill()
                averager.kill()
    # What the thermometer sends is known (its curve, from tick 1): the tester
    # heard a run of it, and each average is the mean of a run of it (the
    # averager's, from the first reading it heard: either of the two may have
    # connected to the thermometer after its first tick).
    for sensor, heard in readings.items():
        sent = _sent(sensor, len(heard) + 50)
        assert any(sent[start : start + len(heard)] == heard for start in range(50)), sensor
    for sensor, mean, count in averages:
        sent = _sent(sensor, count + 50)
        windows = [sent[start : start + count] for start in range(50)]
        assert any(abs(sum(w) / count - mean) < 0.01 for w in windows), (sensor, mean, count)


def _sent(sensor: str, ticks: int) -> list[float]:
    """The readings examples/telemetry.py sends for ``sensor``, from its first tick."""
    offset = {"north": 0.0, "south": 3.0}[sensor]
    curve = (20.0 + offset + 2.0 * math.sin(tick / 5) for tick in range(1, ticks + 1))
    return [float(f"{celsius:.2f}") for celsius in curve]


async def test_request_reply_over_direct_messages(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Tester", bus) as me:
            service = await _start("request_reply.py", bus, "serve")
            try:
                await me.wait_for_peer("Calculator")
                questions = ["2 + 3", "10 / 4", "1 / 0"]
                script = str(EXAMPLES / "request_reply.py")
                client = await trio.run_process(
                    [sys.executable, script, "ask", "--bus", bus, *questions], capture_stdout=True
                )
                assert client.stdout.decode().splitlines() == [
                    "2 + 3 = 5",
                    "10 / 4 = 2.5",
                    "1 / 0 = error: float division by zero",
                ]
                await _die(me, "Calculator", service)
            finally:
                service.kill()

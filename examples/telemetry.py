"""Telemetry: a publisher driven by a timer, a subscriber keeping a running average.

Both run until told to die::

    python examples/telemetry.py publish --bus 127:2010 --interval 0.5
    python examples/telemetry.py average --bus 127:2010

The publisher sends ``TEMP <sensor> <celsius>`` at each tick; the averager
prints, for each reading, the sensor's running average, and publishes it
as ``TEMP_AVG <sensor> <celsius> <readings>``.
"""

from __future__ import annotations

import argparse
import contextlib
import math

import trio

import trivy


async def publish(bus_string: str | None, interval: float) -> None:
    """Send a reading of two sensors at each tick (a smooth, made-up curve)."""
    async with trivy.open_ivy_bus("Thermometer", bus_string) as bus:
        tick = 0

        async def reading() -> None:
            nonlocal tick
            tick += 1
            for sensor, offset in (("north", 0.0), ("south", 3.0)):
                celsius = 20.0 + offset + 2.0 * math.sin(tick / 5)
                await bus.send(f"TEMP {sensor} {celsius:.2f}")

        bus.start_timer(reading, interval)
        await trio.sleep_forever()  # a DIE ends the block


async def average(bus_string: str | None) -> None:
    """Keep each sensor's running average; print and publish it."""
    totals: dict[str, tuple[float, int]] = {}
    async with (
        trivy.open_ivy_bus("Averager", bus_string) as bus,
        bus.subscribe(r"^TEMP (\w+) (-?\d+(?:\.\d+)?)$") as readings,
    ):
        print("averaging", flush=True)
        async for match in readings:
            sensor, celsius = match.groups
            total, count = totals.get(sensor, (0.0, 0))
            total, count = total + float(celsius), count + 1
            totals[sensor] = (total, count)
            mean = total / count
            print(f"{sensor}: {mean:.2f} over {count}", flush=True)
            await bus.send(f"TEMP_AVG {sensor} {mean:.2f} {count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["publish", "average"])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    parser.add_argument("-i", "--interval", type=float, default=1.0, help="seconds (publish)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.role == "publish":
            trio.run(publish, args.bus, args.interval)
        else:
            trio.run(average, args.bus)

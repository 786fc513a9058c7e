"""Which MQTT client should the bridge drive from trio? paho-mqtt against moat-lib-mqtt.

    python -m bench.mqtt_clients            # needs moat-lib-mqtt (not a dependency)
    python -m bench.mqtt_clients --quick

Both clients run on trio in this process against one mosquitto (started
here, on loopback), at QoS 1 (what the bridge uses):

- **paho-mqtt 2.x** through the bridge's driver (``trivy.bridge._mqtt``:
  its external-loop API, the socket awaited with trio);
- **moat-lib-mqtt** (sans-IO core, AnyIO shell, which runs on trio).

1. **Round trip**: publish on a topic the client subscribes to, wait for
   the message to come back; median and p99 in µs.
2. **Throughput**: publish N messages of 100 bytes as fast as the client
   takes them (paho: queued, acknowledged in the background; moat:
   ``publish`` returns once acknowledged, so 64 tasks publish at once),
   until all N came back; messages per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from bench.bridge import mosquitto
from trivy.bridge._mqtt import open_mqtt

PAYLOAD = b"x" * 100


async def paho_client(port: int, n_rt: int, n_tp: int) -> dict[str, float]:
    async with open_mqtt("127.0.0.1", port, client_id="bench-paho") as client:
        client.subscribe("bench/paho/#")
        messages = client.__aiter__()
        client.publish("bench/paho/warm", b"")
        await messages.__anext__()

        async def publish(i: int) -> None:
            client.publish("bench/paho/x", PAYLOAD)

        return await _measure(publish, messages.__anext__, n_rt, n_tp, client.wait_room)


async def moat_client(port: int, n_rt: int, n_tp: int) -> dict[str, float]:
    from moat.lib.mqtt import QoS  # type: ignore[import-not-found]
    from moat.lib.mqtt.async_client import AsyncMQTTClient  # type: ignore[import-not-found]

    async with (
        AsyncMQTTClient("127.0.0.1", port, client_id="bench-moat") as client,
        client.subscribe("bench/moat/#", qos=QoS.AT_LEAST_ONCE) as subscription,
    ):
        messages = subscription.__aiter__()
        await client.publish("bench/moat/warm", b"", qos=QoS.AT_LEAST_ONCE)
        await messages.__anext__()

        async def publish(i: int) -> None:
            await client.publish("bench/moat/x", PAYLOAD, qos=QoS.AT_LEAST_ONCE)

        return await _measure(publish, messages.__anext__, n_rt, n_tp, None, concurrent=64)


async def _measure(
    publish: Callable[[int], Awaitable[None]],
    receive: Callable[[], Awaitable[Any]],
    n_rt: int,
    n_tp: int,
    room: Callable[[], Awaitable[None]] | None,
    *,
    concurrent: int = 1,
) -> dict[str, float]:
    samples = []
    for i in range(n_rt):
        start = time.perf_counter_ns()
        await publish(i)
        await receive()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()

    async def publisher(first: int) -> None:
        for i in range(first, n_tp, concurrent):
            if room is not None:
                await room()
            await publish(i)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for first in range(concurrent):
            nursery.start_soon(publisher, first)
        with trio.fail_after(120):
            for _ in range(n_tp):
                await receive()
    return {
        "round_trip_median_us": statistics.median(samples),
        "round_trip_p99_us": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "messages_per_s": n_tp / (time.perf_counter() - start),
    }


async def run(quick: bool) -> dict[str, Any]:
    n_rt, n_tp = (50, 500) if quick else (2000, 50_000)
    results: dict[str, Any] = {}
    async with mosquitto() as port:
        results["paho-mqtt"] = await paho_client(port, n_rt, n_tp)
        try:
            results["moat-lib-mqtt"] = await moat_client(port, n_rt, n_tp)
        except ImportError:
            results["moat-lib-mqtt"] = "not installed (pip install moat-lib-mqtt)"
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_clients", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(run, args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark agents, each run as a separate process by the orchestrator.

Usage::

    python -m bench.agents IMPL ROLE BUS NAME [options]

``IMPL`` is ``trivy``, ``ivy`` (ivy-python 4.0) or ``compat`` (the ivy-python
agent's code, unmodified, on ``trivy.compat``). Every agent reports on
stdout, one JSON object per line, and the orchestrator synchronises on those
lines only. Roles:

========= ====================================================================
recv      subscribe ``--regexp`` (plus ``--extra`` decoy ``^word<i> (.*)``
          regexps), print ``{"ready": true}`` once the bus is up, count ``-n``
          matches, print ``{"count", "first", "last"}`` (monotonic seconds).
          ``--mode`` (trivy only): ``iter`` (``async for``), ``batch``
          (``receive_batch()``) or ``bind`` (callback).
send      wait for ``--peers`` agents named ``BenchRecv*`` each showing at
          least ``--subs`` subscriptions, send ``-n`` texts ``<--prefix> <i>``,
          print ``{"start", "end", "sent"}``, then stay on the bus until stdin
          closes (so that nothing queued is lost).
echo      answer every ``ping ts=X`` with ``pong ts=X``; print ready; run until
          stdin closes.
ping      wait for the agent ``BenchEcho``, do ``-n`` ping/pong exchanges one at
          a time, print ``{"median_us", "p99_us", "n"}``.
join      print ``{"loaded": true}``, wait for a ``go`` line on stdin, join the
          bus, print ``{"seen": k}`` as peers come, then ``{"joined"}``
          (monotonic seconds) once ``--peers`` other agents are ready; run
          until stdin closes.
mem       print ``{"idle_kib"}`` (VmRSS with the bus up), bind ``-n`` regexps,
          print ``{"subs_kib"}``.
========= ====================================================================

Every agent first prints ``{"port"}``, its TCP port, once its bus is up
(``bench.sides`` connects a peer of its own there). Time stamps are
``time.monotonic()``: on Linux it is one clock for every process of the
machine, so the orchestrator may compare them across agents.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from typing import Any

#: Upper bound, in seconds, on any wait of an agent (the orchestrator also
#: kills every agent at the end of a scenario).
TIMEOUT = 120.0
#: Seconds between two looks at a peer's subscriptions while waiting for them.
POLL = 0.005
RECV_PREFIX = "BenchRecv"
ECHO_NAME = "BenchEcho"


def emit(**fields: Any) -> None:
    """Write one JSON line on stdout and flush it."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def rss_kib() -> int:
    """This process's resident set size, in KiB (from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def latency_report(samples_ns: list[int]) -> None:
    """Print the median and p99 of round trips given in nanoseconds, in µs."""
    micros = [s / 1000 for s in samples_ns]
    emit(median_us=statistics.median(micros), p99_us=percentile(micros, 0.99), n=len(micros))


# =================================================================== trivy
async def _trivy_stdin_closed() -> None:
    """Return when stdin reaches end of file (read in a worker thread)."""
    import trio

    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


#: Regexps of the shapes that broke the bounds (issue: bounds that hold),
#: each made distinct by its number: a receiver of trivy subscribes them, a
#: sender of trivy has to take, refuse or bound each.
HOSTILE_SHAPES = (
    "(?=.{40})z%d",
    "(?:(?=(?:(?=(?:(?=.{16}).){16}).){16}).){16}(?!)z%d",
    ".*.{1054}(?!)z%d",
    "(?:.{99}){10}(?!)z%d",
    "(\\S+) (\\S+) (\\S+) z%d",
)


async def _trivy_wait_subscribers(
    bus: Any, peers: int, subs: int, last: str | None = None
) -> list[Any]:
    """Poll until ``peers`` BenchRecv* agents each show ``subs`` subscriptions
    (or, with ``last``, that regexp: the one they subscribed last)."""
    import trio

    def ready(peer: Any) -> bool:
        if last is not None:
            return last in peer.subscriptions.values()
        return len(peer.subscriptions) >= subs

    while True:
        found = [p for p in bus.peers if p.name.startswith(RECV_PREFIX) and ready(p)]
        if len(found) >= peers:
            return found
        await trio.sleep(POLL)


async def trivy_main(args: argparse.Namespace) -> None:
    """Run one trivy agent in the role ``args.role``."""
    import trio

    import trivy

    with trio.fail_after(TIMEOUT):
        if args.role == "join":
            emit(loaded=True)
            await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        async with trivy.open_ivy_bus(args.name, args.bus) as bus:
            emit(port=bus.port)  # (a peer of bench.sides connects to it directly)
            if args.role == "recv":
                await _trivy_recv(bus, args)
            elif args.role == "send":
                await _trivy_wait_subscribers(bus, args.peers, args.subs, args.wait_regexp)
                start = time.monotonic()
                for i in range(args.n):
                    await bus.send(f"{args.prefix} {i}")
                emit(start=start, end=time.monotonic(), sent=args.n)
                await _trivy_stdin_closed()
            elif args.role == "echo":

                async def answer(_peer: Any, ts: str) -> None:
                    await bus.send(f"pong ts={ts}")

                bus.bind(answer, r"^ping ts=(.*)")
                emit(ready=True)
                await _trivy_stdin_closed()
            elif args.role == "ping":
                await _trivy_ping(bus, args.n)
            elif args.role == "join":
                await _trivy_join(bus, args.peers)
                await _trivy_stdin_closed()
            elif args.role == "mem":
                await trio.sleep(0.2)  # let the agent settle; nothing to wait for
                emit(idle_kib=rss_kib())
                for i in range(args.n):
                    bus.bind(lambda *_: None, f"^word{i} (.*)")
                await trio.sleep(0.2)
                emit(subs_kib=rss_kib())
            bus.stop()


async def _trivy_recv(bus: Any, args: argparse.Namespace) -> None:
    import trio

    for i in range(args.extra):
        bus.bind(lambda *_: None, f"^word{i} (.*)")
    for i in range(args.hostile):
        bus.bind(lambda *_: None, HOSTILE_SHAPES[i % len(HOSTILE_SHAPES)] % i)
    n = args.n
    first = last = 0.0
    count = 0
    if args.mode == "bind":
        done = trio.Event()

        def on_match(_peer: Any, _group: str) -> None:
            nonlocal count, first, last
            count += 1
            if count == 1:
                first = time.monotonic()
            if count == n:
                last = time.monotonic()
                done.set()

        bus.bind(on_match, args.regexp)
        emit(ready=True)
        await done.wait()
    else:
        async with bus.subscribe(args.regexp) as sub:
            emit(ready=True)
            if args.mode == "iter":
                async for _match in sub:
                    count += 1
                    if count == 1:
                        first = time.monotonic()
                    if count == n:
                        break
            else:
                while count < n:
                    batch = await sub.receive_batch()
                    if count == 0:
                        first = time.monotonic()
                    count += len(batch)
            last = time.monotonic()
    emit(count=count, first=first, last=last)


async def _trivy_ping(bus: Any, n: int) -> None:
    import trio

    async with bus.subscribe(r"^pong ts=(.*)") as sub:
        async with bus.events() as events:
            while not any(len(p.subscriptions) >= 1 for p in bus.peers_named(ECHO_NAME)):
                await events.receive()  # a peer or a subscription came: look again
        # Warm up, and make sure the echo knows our subscription.
        for _ in range(50):
            await bus.send("ping ts=warm")
            with trio.move_on_after(0.2):
                while (await sub.receive()).groups[0] != "warm":
                    pass
                break
        samples: list[int] = []
        clock = time.perf_counter_ns
        for i in range(n):
            token = str(i)
            t0 = clock()
            await bus.send(f"ping ts={token}")
            while (await sub.receive()).groups[0] != token:
                pass
            samples.append(clock() - t0)
    latency_report(samples)


async def _trivy_join(bus: Any, peers: int) -> None:
    events = bus.events()
    async with events:
        while (seen := len({p.name for p in bus.peers})) < peers:
            await events.receive()
            emit(seen=seen)
    emit(joined=time.monotonic())


# ==================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the agent's command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.agents")
    parser.add_argument("impl", choices=["trivy", "ivy", "compat"])
    parser.add_argument("role", choices=["recv", "send", "echo", "ping", "join", "mem"])
    parser.add_argument("bus", help="NETWORKS:PORT")
    parser.add_argument("name", help="agent name")
    parser.add_argument("-n", type=int, default=1000, help="messages, exchanges or regexps")
    parser.add_argument("--mode", choices=["iter", "batch", "bind"], default="iter")
    parser.add_argument("--regexp", default=r"^data (.*)")
    parser.add_argument("--prefix", default="data")
    parser.add_argument("--extra", type=int, default=0, help="decoy ^word<i> regexps")
    parser.add_argument(
        "--hostile", type=int, default=0, help="decoy regexps of the red team's shapes"
    )
    parser.add_argument("--wait-regexp", default=None, help="send once peers have this one")
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--subs", type=int, default=1)
    parser.add_argument("--profile", default=None, help="profile into this pstats file")
    parser.add_argument(
        "--slowed",
        type=float,
        default=1.0,
        help="trivy: the agent runs this many times slower than usual (under valgrind)",
    )
    return parser.parse_args(argv)


def _scale_pace(slowed: float) -> None:
    """Scale trivy's burst interval to an agent that runs ``slowed`` times slower.

    A MSG to an idle peer goes out at once unless the previous send ended
    less than ``DIRECT_WRITE_INTERVAL`` ago (a burst: one write for many). A
    sender under valgrind runs about 50 times slower, so back-to-back sends
    would all look lone and make one system call each, a path a real burst
    never takes; the instruction count would then be that path's. The same
    for the time a send loop runs before it yields (``SERVE_SLICE``, for the
    router's sends): 16 sends under valgrind took it, where a real burst
    yields every 1,024.
    """
    if slowed != 1.0:
        from trivy import _output, _routing

        _output.DIRECT_WRITE_INTERVAL *= slowed
        _routing.SERVE_SLICE *= slowed


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the agent, report a failure as ``{"error": ...}``."""
    args = parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            if args.profile:
                from bench.profiling import profiled

                stack.enter_context(profiled(args.profile))
            if args.impl == "trivy":
                import trio

                _scale_pace(args.slowed)
                trio.run(trivy_main, args)
            else:
                from bench.agents_ivy import ivy_main

                ivy_main(args)
    except BaseException as exc:
        emit(error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

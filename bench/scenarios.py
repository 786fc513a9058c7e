"""The scenarios: each runs agents of one implementation and returns a figure.

Every scenario runs on a private loopback bus (``127:PORT`` with a free UDP
port) and leaves no agent behind.
"""

from __future__ import annotations

import time

from bench.processes import LINE_TIMEOUT, AgentError, agents, free_bus

#: Seconds allowed for a group of agents to form a full mesh.
JOIN_TIMEOUT = 10.0


class JoinIncomplete(AgentError):
    """Every agent is alive, but some never saw all the others in time."""


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

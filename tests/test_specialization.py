"""The per-message code runs specialized by CPython 3.11's interpreter.

CPython 3.11 rewrites an attribute, method or global load, a comparison
and some arithmetic into fast forms for the types it meets. Some shapes
never get one:

- a method call on an attribute that holds a bound method
  (``entry.find(text)``, ``find`` an instance attribute): it cost the send
  path about 250 instructions a text in three places;
- a comparison whose result is kept rather than jumped on
  (``timed = length > limit``), two a text on the send path;
- an int ``&`` (a mask for "every 16th"), one per message on each side.

Every load and operation that runs at least once per message, sending and
receiving (callback and ``async for``), must end up specialized, but for
the few listed with their reasons.
"""

from __future__ import annotations

import collections
import dis
import platform
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import trivy
from trivy import _output
from trivy.testing import wait_for_subscription

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11) or platform.python_implementation() != "CPython",
    reason="the names of CPython 3.11's specialized instructions",
)

TEXTS = 2000
#: Loads that have specialized forms in CPython 3.11...
FAMILIES = ("LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "STORE_ATTR")
#: ...and operations that have them for some types: an int ``&`` has none,
#: a comparison has one only when a jump follows it (not when its result
#: is kept).
OPERATIONS = ("COMPARE_OP", "BINARY_OP")
#: Generic loads and operations left on purpose: (function, operation or name).
LEFT_GENERIC = {
    # the lines of a read are appended through one bound method, loaded once
    # a read: a generic load a read, no method load a line
    ("Connection.receive_data", "append"),
    # appending bytes to a bytearray has no specialized form
    ("SendBuffer.send_msg_payload", "+="),
    # a jump too far for one byte follows it (EXTENDED_ARG): the fast path
    # of a MSG line would have to be split into calls to bring it nearer
    ("Connection.receive_data", "=="),
}


def _left_generic(runs: dict[types.CodeType, collections.Counter[int]]) -> list[str]:
    """Loads and operations run at least once a message still in their generic form."""
    found = []
    for code, counts in runs.items():
        for instruction in dis.get_instructions(code, adaptive=True):
            name = instruction.opname
            if counts[instruction.offset] < TEXTS:
                continue
            generic_load = name.startswith(FAMILIES) and name.endswith("_ADAPTIVE")
            generic_operation = name in OPERATIONS or name in {f"{o}_ADAPTIVE" for o in OPERATIONS}
            if (code.co_qualname, instruction.argrepr) in LEFT_GENERIC:
                continue
            if generic_load or generic_operation:
                line = instruction.positions.lineno if instruction.positions else None
                found.append(f"{code.co_qualname}:{line} {name} {instruction.argrepr}")
    return found


class _Tracer:
    """Counts the runs of each instruction of trivy's code while installed."""

    def __init__(self) -> None:
        self.runs: dict[types.CodeType, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if "/trivy/" not in frame.f_code.co_filename:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._opcode

    def _opcode(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            self.runs[frame.f_code][frame.f_lasti] += 1
        return self._opcode


async def _warm_trace_warm(tracer: _Tracer, run: Callable[[], Awaitable[None]]) -> None:
    """``run`` three times: to warm the code up, traced, and again untraced.

    The last run lets what ran in the traced one specialize (tracing slows
    it down, and CPython specializes only where it runs untraced).
    """
    for phase in ("warm", "trace", "warm"):
        if phase == "trace":
            sys.settrace(tracer)
        try:
            await run()
        finally:
            sys.settrace(None)


@pytest.mark.parametrize("direct_interval", [0.0, 1e9], ids=["lone", "burst"])
async def test_per_message_code_is_specialized(
    bus: str, direct_interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path in both phases: every MSG written at once by the sender
    # (lone), or every one left to the writer task (burst); the tracer
    # slows sends down, and the pace would otherwise tell them apart.
    monkeypatch.setattr(_output, "DIRECT_WRITE_INTERVAL", direct_interval)
    tracer = _Tracer()
    received = 0
    target = TEXTS
    reached = trio.Event()

    def on_data(_peer: trivy.Peer, _value: str) -> None:
        nonlocal received, reached
        received += 1
        if received == target:
            reached.set()

    async with (
        trivy.open_ivy_bus("Sender", bus) as sender,
        trivy.open_ivy_bus("Receiver", bus) as receiver,
    ):
        receiver.bind(on_data, "^data (.*)")
        async with receiver.subscribe("^data (.*)") as subscription:
            await wait_for_subscription(sender, "Receiver", "^data (.*)")

            async def consume() -> None:
                taken = 0
                async for _match in subscription:
                    taken += 1
                    if taken == 3 * TEXTS:
                        return

            async def send_all() -> None:
                nonlocal reached, target
                for i in range(TEXTS):
                    await sender.send(f"data {i}")
                await reached.wait()  # (the receiver's share is traced too)
                reached = trio.Event()
                target += TEXTS

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await _warm_trace_warm(tracer, send_all)
    assert len(tracer.runs) > 5  # the tracer saw the send and receive paths
    assert _left_generic(tracer.runs) == []


async def test_a_round_trip_is_specialized(bus: str) -> None:
    """One message a read, each way: the per-read code runs per message too."""
    tracer = _Tracer()
    async with (
        trivy.open_ivy_bus("Echo", bus) as echo,
        trivy.open_ivy_bus("Ping", bus) as ping,
    ):

        async def answer(_peer: trivy.Peer, token: str) -> None:
            await echo.send(f"pong {token}")

        echo.bind(answer, "^ping (.*)")
        async with ping.subscribe("^pong (.*)") as pongs:
            await wait_for_subscription(ping, "Echo", "^ping (.*)")
            await wait_for_subscription(echo, "Ping", "^pong (.*)")

            async def exchange_all() -> None:
                for i in range(TEXTS):
                    await ping.send(f"ping {i}")
                    assert (await pongs.receive()).groups == (str(i),)

            await _warm_trace_warm(tracer, exchange_all)
    assert len(tracer.runs) > 5
    assert _left_generic(tracer.runs) == []

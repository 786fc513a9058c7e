"""The per-message code runs specialized by CPython 3.11's interpreter.

CPython 3.11 rewrites an attribute load, a method load or a global load
into a fast form for the types it meets. Some shapes never get one: a
method call on an attribute that holds a bound method (``entry.find(text)``
where ``find`` is an instance attribute) stays generic, and cost the send
path about 250 instructions a text in three places. Every such load that
runs at least once per message, sending and receiving (callback and
``async for``), must end up specialized.
"""

from __future__ import annotations

import collections
import dis
import platform
import sys
import types
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
#: Loads that have specialized forms in CPython 3.11.
FAMILIES = ("LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "STORE_ATTR")


def _generic_loads(runs: dict[types.CodeType, collections.Counter[int]]) -> list[str]:
    """Loads run at least once a message that are still in their generic form."""
    found = []
    for code, counts in runs.items():
        for instruction in dis.get_instructions(code, adaptive=True):
            name = instruction.opname
            if counts[instruction.offset] < TEXTS or not name.startswith(FAMILIES):
                continue
            if name.endswith("_ADAPTIVE"):
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


@pytest.mark.parametrize("direct_interval", [0.0, 1e9], ids=["lone", "burst"])
async def test_per_message_loads_are_specialized(
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

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                for phase in ("warm", "trace", "warm"):
                    if phase == "trace":
                        sys.settrace(tracer)
                    try:
                        for i in range(TEXTS):
                            await sender.send(f"data {i}")
                        await reached.wait()  # (the receiver's share is traced too)
                    finally:
                        sys.settrace(None)
                    reached = trio.Event()
                    target += TEXTS
    assert len(tracer.runs) > 5  # the tracer saw the send and receive paths
    assert _generic_loads(tracer.runs) == []

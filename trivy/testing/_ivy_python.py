"""A real ivy-python agent in a subprocess, driven from trio code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

__all__ = ["IvyPythonAgent", "ivy_python_agent"]

#: Seconds the agent process has to stop when asked, before it is killed.
STOP_TIMEOUT = 3.0

#: One report of the agent: a JSON object with an ``event`` key.
Report = dict[str, Any]


class IvyPythonAgent:
    """An ivy-python agent process: send it commands, wait for what it reports.

    Commands (:meth:`command`, :meth:`request`) and reports are described in
    the module ``trivy.testing._ivy_python_process``. Every report read is
    kept in :attr:`events`; :meth:`expect` hands each one out at most once,
    so a report that arrived before it was asked for is not lost.

    Attributes:
      process: the ``trio.Process``.
      events: every report read so far, in order.
      ready: the ``ready`` report (its TCP ``port`` and ``agent_id``).
    """

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[Report] = []
        self.ready: Report = {}
        self._handed_out: set[int] = set()
        self._buffer = b""
        self._eof = False

    async def command(self, cmd: str, **fields: Any) -> None:
        """Send one command, for example ``command("send", text="hello")``."""
        assert self.process.stdin is not None
        line = json.dumps({"cmd": cmd, **fields}) + "\n"
        await self.process.stdin.send_all(line.encode())

    async def request(self, cmd: str, answer: str, **fields: Any) -> Report:
        """Send a command and wait for its ``answer`` report."""
        await self.command(cmd, **fields)
        return await self.expect(answer)

    def seen(self, event: str, **fields: Any) -> list[Report]:
        """Every report of that kind (and those field values) read so far."""
        return [report for report in self.events if _matches(report, event, fields)]

    async def expect(self, event: str, **fields: Any) -> Report:
        """The next report of that kind (and field values) not handed out yet.

        Bound the wait with ``trio.fail_after``.

        Raises:
          AssertionError: the process ended first.
        """
        while True:
            for index, candidate in enumerate(self.events):
                if index not in self._handed_out and _matches(candidate, event, fields):
                    self._handed_out.add(index)
                    return candidate
            await self._read_more(event, fields)

    async def _read_more(self, event: str, fields: dict[str, Any]) -> None:
        if self._eof:
            raise AssertionError(
                f"the ivy-python agent exited while we waited for {event} {fields}; "
                f"it reported {self.events}"
            )
        assert self.process.stdout is not None
        data = await self.process.stdout.receive_some(65536)
        if not data:
            self._eof = True
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        self.events.extend(json.loads(line) for line in lines if line.strip())

    async def terminate(self) -> None:
        """Stop the process (asking first, killing if need be) and reap it."""
        process = self.process
        if process.returncode is None:
            with trio.move_on_after(STOP_TIMEOUT):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.command("stop")
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await stream.aclose()


def _matches(candidate: Report, event: str, fields: dict[str, Any]) -> bool:
    return candidate.get("event") == event and all(
        candidate.get(key) == value for key, value in fields.items()
    )


@asynccontextmanager
async def ivy_python_agent(
    bus: str,
    name: str = "PYPEER",
    *,
    bind: Iterable[str] = (),
    ready_message: str | None = None,
    refuse_die: bool = False,
) -> AsyncIterator[IvyPythonAgent]:
    """Run a real ivy-python agent on ``bus`` for the duration of the block.

    It needs ivy-python (``pip install ivy-python==4.0``), run in its own
    process: ivy-python is thread-based. The block starts once the agent
    reported ``ready``: its UDP announce went out and came back, so agents
    started later find it. Regexps in ``bind`` are bound before it starts
    (they are in its handshake). Leaving the block stops the process.

    Raises:
      AssertionError: the agent could not start (ivy-python missing, or its
        announce never came back).
    """
    args = [sys.executable, "-m", "trivy.testing._ivy_python_process", "--bus", bus]
    args += ["--name", name]
    if refuse_die:
        args.append("--refuse-die")
    for regexp in bind:
        args += ["--bind", regexp]
    if ready_message is not None:
        args += ["--ready-message", ready_message]
    process = await trio.lowlevel.open_process(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    agent = IvyPythonAgent(process)
    try:
        agent.ready = await agent.expect("ready")
        assert agent.ready["announced"], "ivy-python's announce never came back"
        yield agent
    finally:
        with trio.CancelScope(shield=True):
            await agent.terminate()

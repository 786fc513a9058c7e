"""The agent processes of a benchmark: start them, read their JSON lines, end them.

Agents are separate processes (``python -m bench.agents``); the
orchestrator synchronises on their stdout lines only, bounds every wait
with a timeout and kills every agent it started when the scenario ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Seconds allowed for one expected line of an agent.
LINE_TIMEOUT = 60.0
#: Seconds the agents of a scenario have, together, to leave before being killed.
LEAVE_TIMEOUT = 3.0
IMPLS = ("trivy", "ivy")
REPO = Path(__file__).resolve().parent.parent


class AgentError(RuntimeError):
    """An agent failed, died or did not answer in time."""


def free_bus() -> str:
    """A bus string ``127:PORT`` on a UDP port nobody uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127:{port}"


class Agent:
    """One agent process and the JSON lines it printed."""

    def __init__(
        self, impl: str, role: str, bus: str, name: str, *options: str, wrap: Sequence[str] = ()
    ) -> None:
        self.label = f"{impl}/{role}/{name}"
        command = [*wrap, sys.executable, "-m", "bench.agents", impl, role, bus, name, *options]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        #: Every key of every line read so far, with its latest value.
        self.latest: dict[str, Any] = {}
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                parsed = json.loads(line)
                self.latest.update(parsed)
                self.lines.put(parsed)
            except json.JSONDecodeError:
                self.stderr.append(f"stdout: {line}")
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-20]

    def expect(self, key: str, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The next line holding ``key`` (earlier lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AgentError(f"{self.label}: no {key!r} within {timeout:.1f} s") from None
            if line is None:
                raise AgentError(f"{self.label}: exited before {key!r}\n{''.join(self.stderr)}")
            if "error" in line:
                raise AgentError(f"{self.label}: {line['error']}\n{''.join(self.stderr)}")
            if key in line:
                return line

    def write(self, text: str) -> None:
        """Write ``text`` to the agent's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """Tell the agent to leave (the long-running roles wait for EOF)."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def kill(self, deadline: float) -> None:
        """Close stdin, let the agent leave until ``deadline``, then kill it."""
        self.close_stdin()
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def agents() -> Iterator[Callable[..., Agent]]:
    """A factory of agents, every one of which is killed on exit."""
    started: list[Agent] = []

    def start(*args: str, wrap: Sequence[str] = ()) -> Agent:
        agent = Agent(*args, wrap=wrap)
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.close_stdin()
        deadline = time.monotonic() + LEAVE_TIMEOUT
        for agent in started:
            agent.kill(deadline)

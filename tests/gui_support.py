"""A virtual screen for the GUI tests (Debian's ``xvfb``), and a flood sender."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "gui"
SENDER = Path(__file__).resolve().parent / "flood_sender.py"
#: Where the tests save screenshots of the windows, when set (see docs/howto/gui.md).
SCREENSHOT_DIR = os.environ.get("TRIVY_GUI_SCREENSHOT_DIR")


@contextmanager
def virtual_screen() -> Iterator[str]:
    """Run Xvfb on a free display for the block; yields the display (":N")."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=[write_end],
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as chosen:
            number = chosen.readline().strip()  # written once the server is ready
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(10)


def save_screenshot(display: str, box: tuple[int, int, int, int], name: str) -> None:
    """Save the screen's ``box`` (left, top, right, bottom) as SCREENSHOT_DIR/name, if set."""
    if SCREENSHOT_DIR is None:
        return
    from PIL import ImageGrab

    ImageGrab.grab(bbox=box, xdisplay=display).save(Path(SCREENSHOT_DIR) / name)


class Flood:
    """A FloodSender process sending RATE texts a second, for SECONDS, to PEER."""

    def __init__(self, bus: str, peer: str, rate: int, seconds: float) -> None:
        self.command = [sys.executable, str(SENDER), bus, peer, str(rate), str(seconds)]
        self.process: trio.Process | None = None

    async def __aenter__(self) -> Flood:
        self.process = await trio.lowlevel.open_process(self.command, stdout=subprocess.PIPE)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.process is not None
        if exc_info[0] is not None:
            self.process.kill()  # (a failed test leaves no sender behind)
        with trio.CancelScope(shield=True):
            await self.process.wait()

    async def sent(self) -> int:
        """Wait for the sender's ``sent N`` line; N."""
        assert self.process is not None and self.process.stdout is not None
        out = b""
        while b"\n" not in out:
            chunk = await self.process.stdout.receive_some()
            assert chunk, "the flood sender ended without reporting"
            out += chunk
        return int(out.split()[1])


def lateness_report(lateness: list[float]) -> dict[str, float]:
    """Median, 99th percentile and worst of a GUI loop's lateness samples, in ms."""
    ordered = sorted(lateness)
    return {
        "samples": len(ordered),
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }

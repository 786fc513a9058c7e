"""The Tk example under a virtual screen: trio as a guest of Tk's main loop.

The window is driven as a user would (text typed, Send pressed); a real
ivy-python agent receives it and answers into the window; the Tk loop's
lateness is measured while 10,000 texts a second arrive; closing the
window says BYE.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import trivy
from trivy.testing import (
    free_bus_address,
    ivy_python_agent,
    wait_for_event,
    wait_for_subscription,
)

from .gui_support import EXAMPLES, Flood, lateness_report, save_screenshot, virtual_screen

tk = pytest.importorskip("tkinter")

sys.path.insert(0, str(EXAMPLES))
from bus_panel import BusPanel  # noqa: E402
from tk_agent import TkAgent  # noqa: E402

from trivy.gui.tk import start_in_tk  # noqa: E402

#: Seconds each test may take.
TIMEOUT = 30
#: The load: texts a second, for how long.
FLOOD_RATE = 10_000
FLOOD_SECONDS = 3.0
#: Milliseconds between two ticks of the Tk loop's latency probe.
TICK_MS = 10


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with virtual_screen() as screen:
        yield screen


@pytest.fixture(autouse=True)
def tk_collected_in_its_thread() -> Iterator[None]:
    """Each test's Tk objects are freed in the main thread, where Tk made them.

    A tkinter widget tree is a reference cycle (children and master), so a
    test's window outlives it until a collection, which any thread's
    allocations may start: Tcl aborts the process when its interpreter is
    freed in another thread (a trio run in a thread, later on).
    """
    yield
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, tk.Tk)], "a window outlived its test"


class LatencyProbe:
    """Asks Tk for a call every TICK_MS and records how late each comes."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.lateness: list[float] = []
        self.running = False

    def start(self) -> None:
        self.running = True
        self._schedule()

    def _schedule(self) -> None:
        due = time.perf_counter() + TICK_MS / 1000
        self.root.after(TICK_MS, self._tick, due)

    def _tick(self, due: float) -> None:
        self.lateness.append(max(0.0, time.perf_counter() - due))
        if self.running:
            self._schedule()


def _window_text(app: TkAgent) -> str:
    return str(app.texts.get("1.0", tk.END))


def _screenshot(root: Any, display: str, name: str) -> None:
    root.update()
    left, top = root.winfo_rootx(), root.winfo_rooty()
    save_screenshot(
        display, (left, top, left + root.winfo_width(), top + root.winfo_height()), name
    )


class WatchedAgent(TkAgent):
    """The example's window, with an event set after each redraw."""

    def __init__(self, root: Any, panel: BusPanel) -> None:
        super().__init__(root, panel)
        self.drawn = trio.Event()

    def draw(self, panel: BusPanel) -> None:
        super().draw(panel)
        self.drawn.set()

    async def until(self, condition: Any) -> None:
        """Wait for redraws until ``condition()`` holds."""
        while not condition():
            self.drawn = trio.Event()
            await self.drawn.wait()


def test_the_window_talks_with_ivy_python_and_stays_responsive_under_load(display: str) -> None:
    bus = free_bus_address()
    root = tk.Tk(screenName=display)
    panel = BusPanel("TkAgent", bus)
    app = WatchedAgent(root, panel)
    until_drawn = app.until
    probe = LatencyProbe(root)
    report: dict[str, Any] = {}

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(panel.run, app.draw)
                async with ivy_python_agent(bus, "PyPeer", bind=["^(hello from tk.*)"]) as peer:
                    await until_drawn(lambda: "PyPeer" in app.peers.get(0, tk.END))
                    await peer.expect("regexp", sender="TkAgent", action="add")
                    # as a user would: type, then press Send
                    app.entry.insert(0, "hello from tk")
                    app.send_button.invoke()
                    report["ivy-python got"] = await peer.expect("msg")
                    await peer.command("send", text="hello from ivy-python")
                    await until_drawn(lambda: "PyPeer: hello from ivy-python" in _window_text(app))
                    # the load: a separate process, 10,000 texts a second
                    async with Flood(bus, "TkAgent", FLOOD_RATE, FLOOD_SECONDS) as flood:
                        await until_drawn(lambda: panel.received > 1)
                        probe.start()
                        began = trio.current_time()
                        sent = await flood.sent()
                        await until_drawn(lambda: panel.received >= sent + 1)
                        report["rate"] = sent / (trio.current_time() - began)
                        probe.running = False
                    _screenshot(root, display, "gui-tk.png")
                nursery.cancel_scope.cancel()

    run = start_in_tk(root, scenario)
    app.run = run  # (what app.start() sets: the Send button goes through it)
    run.add_done_callback(lambda _run: root.destroy())
    root.mainloop()
    run.result()

    assert report["ivy-python got"]["groups"] == ["hello from tk"]
    assert report["ivy-python got"]["sender"] == "TkAgent"
    latency = lateness_report(probe.lateness)
    print(f"Tk loop lateness under {report['rate']:.0f} texts/s: {latency}")
    assert report["rate"] > FLOOD_RATE / 2
    assert latency["samples"] > 50
    assert latency["p99_ms"] < 50, latency  # loose on purpose: a shared CI machine


def test_closing_the_window_says_bye(display: str) -> None:
    bus = free_bus_address()
    leaving: list[Any] = []

    async def observe() -> None:
        with trio.fail_after(TIMEOUT):
            async with trivy.open_ivy_bus("Observer", bus) as me, me.events() as events:
                await wait_for_subscription(me, "TkAgent", "(.*)")
                await me.send("the observer sees you")
                leaving.append(await wait_for_event(events, trivy.PeerDisconnected))

    observer = threading.Thread(target=trio.run, args=(observe,))
    observer.start()
    root = tk.Tk(screenName=display)
    closed = []

    class ClosedOnceSeen(TkAgent):
        def draw(self, panel: BusPanel) -> None:
            super().draw(panel)
            if "Observer: the observer sees you" in panel.texts and not closed:
                closed.append(True)
                root.tk.call(root.protocol("WM_DELETE_WINDOW"))  # the close button

    run = ClosedOnceSeen(root, BusPanel("TkAgent", bus)).start()
    root.mainloop()
    observer.join(TIMEOUT)
    assert closed, "the window never heard the observer"
    assert run.done and run.result() is None  # cancelled by the close button
    assert [event.reason for event in leaving] == ["BYE"]

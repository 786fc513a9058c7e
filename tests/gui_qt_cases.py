"""The Qt example under a virtual screen: trio as a guest of Qt's event loop.

The window is driven as a user would (text typed, Send clicked); a real
ivy-python agent receives it and answers into the window; the Qt loop's
lateness is measured while 10,000 texts a second arrive; closing the
window says BYE.

A process has one QApplication: the module makes it once (the ``qt_app``
fixture, on the module's virtual screen) and shuts it down before the
screen goes. The suite runs this module in a pytest process of its own
(``tests/test_gui_qt.py``): Qt objects that outlive their application, or
Qt aborting on a broken display, then cannot take the rest of the suite
down with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import trivy
from trivy.testing import free_bus_address, ivy_python_agent, wait_for_event

from .gui_support import EXAMPLES, SCREENSHOT_DIR, Flood, lateness_report, virtual_screen

QtWidgets = pytest.importorskip("PySide6.QtWidgets")

from PySide6.QtCore import Qt, QTimer  # noqa: E402

sys.path.insert(0, str(EXAMPLES))
from bus_panel import BusPanel  # noqa: E402
from qt_agent import QtAgent  # noqa: E402

from trivy.gui.qt import start_in_qt  # noqa: E402

#: Seconds each test may take.
TIMEOUT = 30
#: The load: texts a second, for how long.
FLOOD_RATE = 10_000
FLOOD_SECONDS = 3.0
#: Milliseconds between two ticks of the Qt loop's latency probe.
TICK_MS = 10


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with virtual_screen() as screen:
        yield screen


@pytest.fixture(scope="module")
def qt_app(display: str) -> Iterator[Any]:
    """The process's QApplication, on the virtual screen (xcb, as on a desktop)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DISPLAY", display)
        env.setenv("QT_QPA_PLATFORM", "xcb")
        # Qt aborts the process when its platform plugin cannot load: try it aside first
        probe = subprocess.run(
            [sys.executable, "-c", "from PySide6.QtWidgets import QApplication; QApplication([])"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "QT_DEBUG_PLUGINS": "1"},  # (names the missing library)
        )
        if probe.returncode != 0:  # (PySide6 is there: say why rather than skip)
            why = [line for line in probe.stderr.splitlines() if "annot load" in line]
            pytest.fail(
                "Qt's xcb platform plugin does not load under Xvfb (a Debian library missing?):\n"
                + "\n".join(why or probe.stderr.splitlines()[-5:])
            )
        app = QtWidgets.QApplication([])
        app.setQuitOnLastWindowClosed(False)  # (each test ends its own loop)
        yield app
        app.closeAllWindows()
        app.shutdown()  # (before its X server goes; another module may make its own)


class LatencyProbe:
    """Asks Qt for a call every TICK_MS and records how late each comes."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.running = False
        self._due = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # (not Qt's 5% slack)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.running = True
        self._schedule()

    def _schedule(self) -> None:
        self._due = time.perf_counter() + TICK_MS / 1000
        self._timer.start(TICK_MS)

    def _tick(self) -> None:
        self.lateness.append(max(0.0, time.perf_counter() - self._due))
        if self.running:
            self._schedule()


def _window_text(app: QtAgent) -> str:
    return str(app.texts.toPlainText())


def _peers(app: QtAgent) -> list[str]:
    return [app.peers.item(row).text() for row in range(app.peers.count())]


def _screenshot(app: QtAgent, name: str) -> None:
    """Save the window as SCREENSHOT_DIR/name."""
    if SCREENSHOT_DIR is None:
        return
    assert app.window.grab().save(os.path.join(SCREENSHOT_DIR, name)), name


def test_the_window_talks_with_ivy_python_and_stays_responsive_under_load(qt_app: Any) -> None:
    bus = free_bus_address()
    panel = BusPanel("QtAgent", bus)
    app = QtAgent(panel)
    app.window.show()
    drawn = [trio.Event()]

    def draw(panel: BusPanel) -> None:
        app.draw(panel)
        drawn[0].set()

    async def until_drawn(condition: Any) -> None:
        while not condition():
            drawn[0] = trio.Event()
            await drawn[0].wait()

    probe = LatencyProbe()
    report: dict[str, Any] = {}

    async def scenario() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(panel.run, draw)
                async with ivy_python_agent(bus, "PyPeer", bind=["^(hello from qt.*)"]) as peer:
                    await until_drawn(lambda: "PyPeer" in _peers(app))
                    await peer.expect("regexp", sender="QtAgent", action="add")
                    # as a user would: type, then click Send
                    app.entry.setText("hello from qt")
                    app.send_button.click()
                    report["ivy-python got"] = await peer.expect("msg")
                    await peer.command("send", text="hello from ivy-python")
                    await until_drawn(lambda: "PyPeer: hello from ivy-python" in _window_text(app))
                    # the load: a separate process, 10,000 texts a second
                    async with Flood(bus, "QtAgent", FLOOD_RATE, FLOOD_SECONDS) as flood:
                        await until_drawn(lambda: panel.received > 1)
                        probe.start()
                        began = trio.current_time()
                        sent = await flood.sent()
                        await until_drawn(lambda: panel.received >= sent + 1)
                        report["rate"] = sent / (trio.current_time() - began)
                        probe.running = False
                    _screenshot(app, "gui-qt.png")
                nursery.cancel_scope.cancel()

    run = start_in_qt(scenario)
    app.run = run  # (what app.start() sets: the Send button goes through it)
    run.add_done_callback(lambda _run: qt_app.exit())
    qt_app.exec()
    app.window.close()  # (the run is done: it closes at once)
    run.result()

    assert report["ivy-python got"]["groups"] == ["hello from qt"]
    assert report["ivy-python got"]["sender"] == "QtAgent"
    latency = lateness_report(probe.lateness)
    print(f"Qt loop lateness under {report['rate']:.0f} texts/s: {latency}")
    assert report["rate"] > FLOOD_RATE / 2
    assert latency["samples"] > 50
    assert latency["p99_ms"] < 50, latency  # loose on purpose: a shared CI machine


def test_closing_the_window_says_bye(qt_app: Any) -> None:
    bus = free_bus_address()
    observer_sees_agent = threading.Event()
    leaving: list[Any] = []
    closed: list[bool] = []

    async def observe() -> None:
        with trio.fail_after(TIMEOUT):
            async with trivy.open_ivy_bus("Observer", bus) as me, me.events() as events:
                await me.wait_for_peer("QtAgent")
                observer_sees_agent.set()
                run.soon(close_when_both_know)  # (the agent may know already)
                leaving.append(await wait_for_event(events, trivy.PeerDisconnected))

    def close_when_both_know() -> None:
        """Close once each side knows the other: called in Qt's thread after
        each draw, and for the observer once it sees the agent."""
        if "Observer" in app.panel.peers and observer_sees_agent.is_set() and not closed:
            closed.append(True)
            app.window.close()  # what the close button does

    class ObservedAgent(QtAgent):
        def draw(self, panel: BusPanel) -> None:
            super().draw(panel)
            close_when_both_know()

    app = ObservedAgent(BusPanel("QtAgent", bus))
    run = app.start()
    observer = threading.Thread(target=trio.run, args=(observe,))
    observer.start()  # (it sees the agent once Qt's loop runs)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(run.cancel)
    deadline.start(TIMEOUT * 1000)
    qt_app.exec()  # (the agent quits it once the run is done)
    deadline.stop()
    observer.join(TIMEOUT)
    assert closed, "the window never saw the observer"
    assert run.done and run.result() is None  # cancelled by the close button
    assert not app.window.isVisible()  # closed once the bus was left
    assert [event.reason for event in leaving] == ["BYE"]

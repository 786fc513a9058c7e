"""An Ivy agent with a Qt window, trio running as a guest of Qt's event loop.

The window lists the peers, shows the texts received and sends what you
type. There is one thread: trio's tasks run between Qt's events, so the
window stays responsive however busy the bus is. Closing the window leaves
the bus cleanly (BYE to every peer), then the app quits::

    python examples/gui/qt_agent.py --bus 127:2010    # pip install "trivy[gui]"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bus_panel import BusPanel  # (beside this file)
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from trivy.gui import GuestRun
from trivy.gui.qt import start_in_qt


class AgentWindow(QWidget):
    """A window whose close button asks first: ``may_close()`` says whether
    it closes now (else it closes later, by :meth:`close`)."""

    def __init__(self, may_close: Callable[[], bool]) -> None:
        super().__init__()
        self.may_close = may_close

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.may_close():
            event.accept()
        else:
            event.ignore()


class QtAgent:
    """The window: peers on the left, texts on the right, a line to send."""

    def __init__(self, panel: BusPanel) -> None:
        self.panel = panel
        self.run: GuestRun[None] | None = None
        self.window = AgentWindow(self._may_close)
        self.window.setWindowTitle(f"{panel.name} (trivy)")
        self.window.resize(720, 420)
        columns = QHBoxLayout(self.window)
        left = QVBoxLayout()
        columns.addLayout(left)
        left.addWidget(QLabel("Peers"))
        self.peers = QListWidget()
        self.peers.setFixedWidth(180)
        left.addWidget(self.peers)
        right = QVBoxLayout()
        columns.addLayout(right, stretch=1)
        self.count = QLabel("Received: 0")
        right.addWidget(self.count)
        self.texts = QPlainTextEdit()
        self.texts.setReadOnly(True)
        right.addWidget(self.texts, stretch=1)
        line = QHBoxLayout()
        right.addLayout(line)
        self.entry = QLineEdit()
        self.entry.returnPressed.connect(self.send)
        line.addWidget(self.entry, stretch=1)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        line.addWidget(self.send_button)
        self.status = QLabel(panel.status)
        right.addWidget(self.status)

    def start(self) -> GuestRun[None]:
        """Show the window and start the agent in Qt's loop: closing the
        window leaves the bus, then closes the window and quits the app."""
        self.run = start_in_qt(self.panel.run, self.draw)
        self.run.add_done_callback(self._finished)
        self.window.show()
        return self.run

    def send(self) -> None:
        """The Send button: the entry's text goes to the bus."""
        text = self.entry.text().strip()
        if text and self.run is not None:
            self.entry.clear()
            self.run.soon(self.panel.send, text)

    def draw(self, panel: BusPanel) -> None:
        """Show the panel's state (called by a trio task: same thread as Qt)."""
        shown = [self.peers.item(row).text() for row in range(self.peers.count())]
        if shown != panel.peers:
            self.peers.clear()
            self.peers.addItems(panel.peers)
        self.count.setText(f"Received: {panel.received}   Sent: {panel.sent}")
        self.status.setText(panel.status)
        self.texts.setPlainText("\n".join(panel.texts))
        scroll = self.texts.verticalScrollBar()
        scroll.setValue(scroll.maximum())

    def _may_close(self) -> bool:
        if self.run is None or self.run.done:
            return True
        self.run.cancel()  # the window closes once the bus is left
        return False

    def _finished(self, _run: GuestRun[None]) -> None:
        self.window.close()
        QApplication.exit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    parser.add_argument("-n", "--name", default="QtAgent")
    parser.add_argument("-r", "--regexp", default="(.*)", help="what to show (default: all)")
    args = parser.parse_args()
    app = QApplication(sys.argv)
    run = QtAgent(BusPanel(args.name, args.bus, args.regexp)).start()
    app.exec()
    run.result()  # raises what the agent raised


if __name__ == "__main__":
    main()

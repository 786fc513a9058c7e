"""trio as a guest of Qt's event loop (PySide6).

::

    app = QApplication(sys.argv)
    ...                                   # build the window, show it
    trivy.gui.qt.run_in_qt(main)          # main: async, e.g. opens a bus

Qt has one call that other threads may make: :meth:`QCoreApplication.postEvent`.
Each call trio asks for is posted as a custom event (its type from
:meth:`QEvent.registerEventType`) carrying the function, to a small
``QObject`` that lives in the GUI thread; its ``event()`` calls the function
when Qt's loop delivers the event, between two other events. The run holds
that object for its whole life.

Why by hand rather than with `qtrio <https://pypi.org/project/qtrio/>`_: the
mechanism is this one small module, and the ``gui`` extra then needs PySide6
and nothing else. qtrio 0.8.0 (its latest release) requires ``qts~=0.3.0``
(a Qt-binding shim whose latest release, 0.3, is classified for Python 3.6
to 3.9), ``trio-typing~=0.8.0`` (trio ships its own types since 0.23) and
``async_generator``, and is classified for Python 3.10 and 3.11 only: a
pinned stack of its own, which would set trivy's pace for Qt and Python.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QThread
from PySide6.QtGui import QGuiApplication

from ._guest import GuestRun

__all__ = ["run_in_qt", "start_in_qt"]

T = TypeVar("T")

#: The type of the events that carry trio's calls (one per process).
_CALL_EVENT = QEvent.Type(QEvent.registerEventType())


class _CallEvent(QEvent):
    """A function for the GUI thread to call."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(_CALL_EVENT)
        self.fn = fn


class _Caller(QObject):
    """Lives in the GUI thread: calls the function each :class:`_CallEvent` carries."""

    def event(self, event: QEvent) -> bool:
        if isinstance(event, _CallEvent):
            event.fn()
            return True
        return super().event(event)


def _application() -> QGuiApplication:
    app = QCoreApplication.instance()
    if not isinstance(app, QGuiApplication):
        raise RuntimeError(
            "trivy.gui.qt needs a QApplication: create one first, "
            "e.g. app = QApplication(sys.argv), then build the window"
        )
    return app


def start_in_qt(async_fn: Callable[..., Awaitable[T]], *args: Any) -> GuestRun[T]:
    """Start ``async_fn(*args)`` as a guest of Qt's event loop; returns at once.

    Call it from the GUI thread, once the QApplication exists, before
    ``app.exec()`` or from a Qt slot. The run's steps happen once the loop
    runs. The loop must keep running until the run is done: leave the
    window by :meth:`GuestRun.cancel`, and quit the app from a done callback.

    Raises:
      RuntimeError: there is no QApplication, or this is not its thread.
    """
    app = _application()
    if QThread.currentThread() is not app.thread():
        raise RuntimeError("start_in_qt must be called from the QApplication's thread")
    caller = _Caller()  # (in this thread: the GUI's; held by the closure below)

    def run_sync_soon(fn: Callable[[], object]) -> None:
        QCoreApplication.postEvent(caller, _CallEvent(fn))  # (any thread)

    run: GuestRun[T] = GuestRun()
    run.start(
        async_fn,
        *args,
        run_sync_soon_threadsafe=run_sync_soon,
        run_sync_soon_not_threadsafe=run_sync_soon,
    )
    return run


def run_in_qt(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T | None:
    """Run ``async_fn(*args)`` in the QApplication's event loop, until both end.

    Closing the last window cancels the run; when the run ends (cancelled
    or not), ``app.exec()`` returns (``app.exit()``: unlike ``app.quit()``,
    no window can refuse it). Should the app quit first (``app.quit()`` from
    elsewhere), the run is cancelled and the loop runs on until it ends: the
    bus still leaves cleanly.

    Returns:
      what ``async_fn`` returned, or None if it was cancelled; raises what
      it raised.

    Raises:
      RuntimeError: there is no QApplication (create one, and the window,
        before calling this).
    """
    app = _application()
    quit_on_last = QGuiApplication.quitOnLastWindowClosed()
    QGuiApplication.setQuitOnLastWindowClosed(False)  # (the run's end quits)
    run = start_in_qt(async_fn, *args)
    app.lastWindowClosed.connect(run.cancel)
    run.add_done_callback(lambda _run: app.exit())
    try:
        app.exec()
        while not run.done:  # the app was quit by someone else: leave cleanly
            run.cancel()
            app.exec()
    finally:
        app.lastWindowClosed.disconnect(run.cancel)
        QGuiApplication.setQuitOnLastWindowClosed(quit_on_last)
    return run.result()

"""The compat bus thread: what ends it is reported where it belongs.

Opening the bus fails in ``start()``'s thread, whatever the exception
(KeyboardInterrupt and SystemExit included). Once the bus is up, an
exception is logged as a crash; KeyboardInterrupt and SystemExit are not
swallowed but end the thread as in any thread (``threading.excepthook``).
Either way the thread cleans up: ``on_close`` runs and ``stopped`` is set.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import trivy
from trivy.compat._bridge import BusThread

#: Upper bound of every wait, in seconds.
TIMEOUT = 10.0


class Owner:
    """The callbacks of a BusThread, recording that the bus closed."""

    def __init__(self) -> None:
        self.closed = 0
        self.thread = BusThread(self.on_open, self.on_event, self.on_close)

    def on_open(self, bus: trivy.IvyBus) -> None:
        pass

    async def on_event(self, event: trivy.BusEvent) -> None:
        pass

    def on_close(self) -> None:
        self.closed += 1


@asynccontextmanager
async def _failing(exc: BaseException) -> AsyncIterator[trivy.IvyBus]:
    raise exc
    yield  # (a generator)


def _contains(exc: BaseException | None, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is a ``kind``, or an exception group holding one."""
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    return isinstance(exc, kind) or any(_contains(one, kind) for one in inner)


@pytest.mark.parametrize("exc", [OSError(98, "in use"), KeyboardInterrupt(), SystemExit(3)])
def test_whatever_opening_the_bus_raises_reaches_start(exc: BaseException) -> None:
    owner = Owner()
    with pytest.raises(type(exc)) as raised:
        owner.thread.start(functools.partial(_failing, exc), name="bridge-test", daemon=True)
    assert raised.value is exc
    assert owner.closed == 1
    assert owner.thread.stopped.is_set() and not owner.thread.is_alive()


@pytest.fixture
def excepthook(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """What reaches threading.excepthook during the test."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def _run_and_raise(bus: str, exc: BaseException) -> Owner:
    """Start a bus thread, raise ``exc`` in a task of its bus, wait until the thread ended."""
    owner = Owner()
    owner.thread.start(functools.partial(trivy.open_ivy_bus, "A", bus), name="bridge-test",
                       daemon=True)  # fmt: skip
    thread = owner.thread._thread
    assert thread is not None

    async def fail(bus: trivy.IvyBus) -> None:
        raise exc

    owner.thread.start_soon(fail)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert owner.closed == 1 and owner.thread.stopped.is_set()
    return owner


def test_keyboard_interrupt_in_the_running_bus_ends_its_thread_unswallowed(
    bus: str, excepthook: list[BaseException | None], caplog: pytest.LogCaptureFixture
) -> None:
    _run_and_raise(bus, KeyboardInterrupt())
    assert len(excepthook) == 1 and _contains(excepthook[0], KeyboardInterrupt)
    assert "crashed" not in caplog.text


def test_an_exception_in_the_running_bus_is_logged_as_a_crash(
    bus: str, excepthook: list[BaseException | None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "Ivy")
    _run_and_raise(bus, ValueError("bug"))
    assert excepthook == []
    assert "the Ivy bus thread crashed" in caplog.text and "ValueError: bug" in caplog.text


def test_a_server_that_cannot_start_leaves_no_callback_thread(bus: str) -> None:
    from trivy.compat.ivy import IvyServer

    server = IvyServer("NOHOST", host="203.0.113.7")  # TEST-NET-3: not ours, bind fails
    with pytest.raises(OSError):
        server.start(bus)
    assert not server.isAlive()
    callbacks = server._trivy_callbacks._run.thread
    assert callbacks is not None  # it was started, and must now end
    callbacks.join(TIMEOUT)
    assert not callbacks.is_alive()

"""The application's callbacks, in order, on a thread of their own.

ivy-python runs a peer's callbacks on that peer's thread: a callback that
blocks stalls that peer only. trivy's compat server hands every callback to
one thread of the server's, in the order the bus produced them, so a
callback that blocks stalls neither the bus (its PING answers, timers,
other peers' traffic) nor the order in which the application sees events.
The queue between them is bounded: when the application falls behind by
that much, the bus waits for it (as ivy-python's socket threads would).
Stopping never blocks: the thread runs what is queued, then ends.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._constants import error

__all__ = ["MAX_PENDING_CALLBACKS", "CallbackThread"]

#: Callbacks queued for the application before the bus waits for it.
MAX_PENDING_CALLBACKS = 10_000
#: How often a waiting thread looks whether it was told to stop (seconds).
_POLL = 0.2

_Job = tuple[Callable[..., Any], tuple[Any, ...], "list[Any] | None", "threading.Event | None"]


class _Run:
    """One life of the thread: its queue and whether it was told to stop."""

    def __init__(self) -> None:
        self.queue: queue.Queue[_Job] = queue.Queue(MAX_PENDING_CALLBACKS)
        self.stopping = False
        self.after: Callable[[], object] | None = None
        self.thread: threading.Thread | None = None


class CallbackThread:
    """One thread running submitted calls in order (started and stopped by the server)."""

    def __init__(self, name: str, *, daemon: bool) -> None:
        self._name = name
        self._daemon = daemon
        self._run = _Run()

    def start(self) -> None:
        """Start a thread (a new one, with a new queue, after a stop)."""
        run = self._run = _Run()
        run.thread = threading.Thread(
            target=self._main, args=(run,), name=self._name, daemon=self._daemon
        )
        run.thread.start()

    def in_thread(self) -> bool:
        """Whether the caller is this thread (inside a callback)."""
        thread = self._run.thread
        return thread is not None and thread.ident == threading.get_ident()

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; waits (without blocking trio) while the queue is full."""
        run, job = self._run, (fn, args, None, None)
        if run.stopping:
            return
        try:
            run.queue.put_nowait(job)
        except queue.Full:
            await trio.to_thread.run_sync(_put, run, job, abandon_on_cancel=True)

    def submit_from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` from any thread but this one (waiting for room).

        From this thread (a callback), ``fn`` runs at once instead: a thread
        cannot wait for room in its own queue.
        """
        if self.in_thread():
            fn(*args)
            return
        run, job = self._run, (fn, args, None, None)
        if not run.stopping:
            _put(run, job)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Queue ``fn(*args)`` and wait for its result (None if it raised or was dropped)."""
        run, done = self._run, threading.Event()
        result: list[Any] = []
        job: _Job = (fn, args, result, done)
        # (abandoned if the bus stops meanwhile: the callback may be what stops it)
        if not await trio.to_thread.run_sync(_put, run, job, abandon_on_cancel=True):
            return None
        await trio.to_thread.run_sync(done.wait, abandon_on_cancel=True)
        return result[0] if result else None

    def stop(self, after: Callable[[], object] | None = None) -> None:
        """End the thread once it has run what is queued, then call ``after()``.

        Never blocks: it only tells the thread.
        """
        run = self._run
        run.after, run.stopping = after, True
        if run.thread is None:
            if after is not None:
                after()
            return
        with contextlib.suppress(queue.Full):  # (if full, the thread sees the flag later)
            run.queue.put_nowait(_WAKE)

    def join(self) -> None:
        """Wait until the thread has ended (not from the thread itself)."""
        thread = self._run.thread
        if thread is not None and not self.in_thread():
            thread.join()

    @staticmethod
    def _main(run: _Run) -> None:
        while True:
            try:
                fn, args, result, done = run.queue.get(timeout=_POLL)
            except queue.Empty:
                if run.stopping:
                    break
                continue
            if fn is _wake:
                if run.queue.empty():
                    break
                continue  # (jobs put after it still run)
            try:
                value = fn(*args)
                if result is not None:
                    result.append(value)
            except Exception:  # the handle_* defaults log theirs; an override's too
                error("callback %r raised", fn, exc_info=True)
            finally:
                if done is not None:
                    done.set()
        if run.after is not None:
            run.after()


def _wake() -> None:
    """A job that does nothing: it wakes the thread to see it is told to stop."""


_WAKE: _Job = (_wake, (), None, None)


def _put(run: _Run, job: _Job) -> bool:
    """Put ``job`` once there is room; False if the thread was told to stop first."""
    while not run.stopping:
        try:
            run.queue.put(job, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False

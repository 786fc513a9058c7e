"""The application's callbacks, in order, on a thread of their own.

ivy-python runs a peer's callbacks on that peer's thread: a callback that
blocks stalls that peer only. trivy's compat server hands every callback to
one thread of the server's, in the order the bus produced them, so a
callback that blocks stalls neither the bus (its PING answers, timers,
other peers' traffic) nor the order in which the application sees events.
The queue between them is bounded: when the application falls behind by
that much, the bus waits for it (as ivy-python's socket threads would).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._constants import error

__all__ = ["MAX_PENDING_CALLBACKS", "CallbackThread"]

#: Callbacks queued for the application before the bus waits for it.
MAX_PENDING_CALLBACKS = 10_000

_Job = tuple[Callable[..., Any], tuple[Any, ...], "list[Any] | None", "threading.Event | None"]


class CallbackThread:
    """One thread running submitted calls in order (started and stopped by the server)."""

    def __init__(self, name: str, daemon: bool) -> None:
        self._name = name
        self._daemon = daemon
        self._queue: queue.Queue[_Job | None] = queue.Queue(MAX_PENDING_CALLBACKS)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a new one after a stop)."""
        self._queue = queue.Queue(MAX_PENDING_CALLBACKS)
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=self._daemon)
        self._thread.start()

    def in_thread(self) -> bool:
        """Whether the caller is this thread (inside a callback)."""
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; waits (without blocking trio) while the queue is full."""
        job: _Job = (fn, args, None, None)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            await trio.to_thread.run_sync(self._queue.put, job, abandon_on_cancel=True)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Queue ``fn(*args)`` and wait for its result (None if it raised)."""
        result: list[Any] = []
        done = threading.Event()
        job: _Job = (fn, args, result, done)
        # (abandoned if the bus stops meanwhile: the callback may be what stops it)
        await trio.to_thread.run_sync(self._queue.put, job, abandon_on_cancel=True)
        await trio.to_thread.run_sync(done.wait, abandon_on_cancel=True)
        return result[0] if result else None

    def stop(self, after: Callable[[], object] | None = None) -> None:
        """End the thread once it has run what is queued, then ``after()`` (see :meth:`join`)."""
        if self._thread is not None:
            if after is not None:
                self._queue.put((after, (), None, None))
            self._queue.put(None)

    def join(self) -> None:
        """Wait until the thread has ended (not from the thread itself)."""
        thread = self._thread
        if thread is not None and not self.in_thread():
            thread.join()

    def _main(self) -> None:
        while (job := self._queue.get()) is not None:
            fn, args, result, done = job
            try:
                value = fn(*args)
                if result is not None:
                    result.append(value)
            except Exception:  # the handle_* defaults log theirs; an override's too
                error("callback %r raised", fn, exc_info=True)
            finally:
                if done is not None:
                    done.set()

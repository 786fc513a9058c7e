"""The application's callbacks, in order, on a thread of their own.

ivy-python runs a peer's callbacks on that peer's thread: a callback that
blocks stalls that peer only. trivy's compat server hands every callback to
one thread of the server's, in the order the bus produced them, so a
callback that blocks stalls neither the bus (its PING answers, timers,
other peers' traffic) nor the order in which the application sees events.
The queue between them is bounded, in jobs and in the characters of their
arguments: when the application falls behind by that much, the bus waits
for it (as ivy-python's socket threads would).
Stopping never blocks: the thread runs what is queued, then ends.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._constants import error, warn

__all__ = ["ARG_COST", "MAX_PENDING_CALLBACKS", "MAX_PENDING_CHARS", "CallbackThread"]

#: Callbacks queued for the application before the bus waits for it.
MAX_PENDING_CALLBACKS = 10_000
#: Characters of the queued callbacks' text arguments (a MSG's groups, a
#: direct message) before the bus waits for the application, counting
#: :data:`ARG_COST` more for each: the core's bound on a subscription's
#: unread matches (16 Mi). A callback's are released once it has run; one
#: callback is always taken, however big.
MAX_PENDING_CHARS = 16 * 1024 * 1024
#: What a text argument costs besides its characters (the core's cost of a
#: MSG's group): 10,000 queued MSGs of 1 MiB held 10 GB before this bound.
ARG_COST = 64
#: How often a waiting thread looks whether it was told to stop (seconds).
_POLL = 0.2

_Job = tuple[Callable[..., Any], tuple[Any, ...], "list[Any] | None", "threading.Event | None", int]


class _Chars:
    """The characters the queued jobs hold, which a put waits for room in."""

    def __init__(self) -> None:
        self.held = 0
        self._changed = threading.Condition()

    def _fits(self, cost: int) -> bool:
        # (one job always fits, or a bigger one would wait forever)
        return not cost or not self.held or self.held + cost <= MAX_PENDING_CHARS

    def take_nowait(self, cost: int) -> bool:
        """Hold ``cost`` more characters if they fit now."""
        with self._changed:
            if not self._fits(cost):
                return False
            self.held += cost
            return True

    def take(self, cost: int, timeout: float) -> bool:
        """Hold ``cost`` more characters once they fit, waiting ``timeout`` at most."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._fits(cost), timeout):
                return False
            self.held += cost
            return True

    def release(self, cost: int) -> None:
        """Give back a job's characters (it has run, or was never queued)."""
        if cost:
            with self._changed:
                self.held -= cost
                self._changed.notify_all()


class _Run:
    """One life of the thread: its queue and whether it was told to stop."""

    def __init__(self) -> None:
        self.queue: queue.Queue[_Job] = queue.Queue(MAX_PENDING_CALLBACKS)
        self.chars = _Chars()
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

    def pending(self) -> tuple[int, int]:
        """The queued callbacks and the characters they hold (the one running too)."""
        run = self._run
        return run.queue.qsize(), run.chars.held

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; waits (without blocking trio) while the queue is full."""
        run, job = self._run, _job(fn, args)
        if run.stopping:
            return
        if not _put_nowait(run, job):
            await trio.to_thread.run_sync(_put, run, job, abandon_on_cancel=True)

    def submit_from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` from any thread but this one (waiting for room).

        From this thread (a callback), ``fn`` runs at once instead: a thread
        cannot wait for room in its own queue.
        """
        if self.in_thread():
            fn(*args)
            return
        run, job = self._run, _job(fn, args)
        if not run.stopping:
            _put(run, job)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Queue ``fn(*args)`` and wait for its result (None if it raised or was dropped)."""
        run, done = self._run, threading.Event()
        result: list[Any] = []
        job: _Job = (fn, args, result, done, 0)  # (only the bus's own calls)
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
                fn, args, result, done, cost = run.queue.get(timeout=_POLL)
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
            except SystemExit:  # (sys.exit() in a callback ends a thread of ivy-python's
                # handler, not the program: here it must not end every later callback)
                warn("callback %r called sys.exit(): the program goes on", fn)
            finally:
                run.chars.release(cost)
                if done is not None:
                    done.set()
        if run.after is not None:
            run.after()


def _wake() -> None:
    """A job that does nothing: it wakes the thread to see it is told to stop."""


_WAKE: _Job = (_wake, (), None, None, 0)


def _job(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Job:
    """A job for ``fn(*args)``, costing its text arguments (4 bytes a
    character in a text past ASCII, as a str of them may take)."""
    cost = sum(
        (len(arg) if arg.isascii() else 4 * len(arg)) + ARG_COST
        for arg in args
        if isinstance(arg, str)
    )
    return (fn, args, None, None, cost)


def _put_nowait(run: _Run, job: _Job) -> bool:
    """Put ``job`` if there is room now, in jobs and in characters."""
    cost = job[4]
    if not run.chars.take_nowait(cost):
        return False
    try:
        run.queue.put_nowait(job)
    except queue.Full:
        run.chars.release(cost)
        return False
    return True


def _put(run: _Run, job: _Job) -> bool:
    """Put ``job`` once there is room; False if the thread was told to stop first."""
    cost = job[4]
    while not run.chars.take(cost, _POLL):
        if run.stopping:
            return False
    while not run.stopping:
        try:
            run.queue.put(job, timeout=_POLL)
            return True
        except queue.Full:
            continue
    run.chars.release(cost)
    return False

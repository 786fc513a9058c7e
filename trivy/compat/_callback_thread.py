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

import collections
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


class _Run:
    """One life of the thread: its jobs, what they hold, whether it was told to stop.

    Each side wakes the other only when it waits: under load, the thread
    takes every queued job at once, and the bus never wakes it while it
    runs (a wake-up a callback cost 20 µs). The lock guards the queue and
    what is added to it; what has run is counted by the thread alone,
    without it (one writer each: no count is lost, and a stale one only
    makes the room look smaller).
    """

    def __init__(self) -> None:
        self.jobs: collections.deque[_Job] = collections.deque()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        #: Jobs queued in all, and their characters (under the lock)...
        self.added = self.added_cost = 0
        #: ...and those that have run (by the thread alone).
        self.finished = self.finished_cost = 0
        self.idle = False  # (the thread waits for a job)
        self.blocked = 0  # (puts waiting for room)
        self.stopping = False
        self.after: Callable[[], object] | None = None
        self.thread: threading.Thread | None = None

    def fits(self, cost: int) -> bool:
        """Whether a job of ``cost`` fits now (one always fits, or a bigger
        one would wait for ever). Called with the lock held."""
        if self.added - self.finished >= MAX_PENDING_CALLBACKS:
            return False
        held = self.added_cost - self.finished_cost
        return not cost or not held or held + cost <= MAX_PENDING_CHARS

    def append(self, job: _Job) -> None:
        """Queue ``job`` (it fits; the lock is held)."""
        self.jobs.append(job)
        self.added += 1
        self.added_cost += job[4]
        if self.idle:
            self.changed.notify_all()

    def done(self, cost: int) -> None:
        """A job has run (or was never run): give back its room (in the thread)."""
        self.finished += 1
        self.finished_cost += cost
        if self.blocked:
            with self.lock:
                self.changed.notify_all()


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
        """The queued callbacks and the characters they hold (those running too)."""
        run = self._run
        return run.added - run.finished, run.added_cost - run.finished_cost

    async def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; waits (without blocking trio) while the queue is full."""
        run, job = self._run, _job(fn, args)
        if run.stopping:
            return
        if not _put_nowait(run, job):
            await trio.to_thread.run_sync(_put, run, job, abandon_on_cancel=True)

    def submit_nowait(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)`` if there is room now; whether it was taken (or
        dropped: the thread was told to stop)."""
        run = self._run
        return run.stopping or _put_nowait(run, _job(fn, args))

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

    def submit_last(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` whatever the queue holds (never waits): for
        the few calls made as the bus closes. The thread may be what closes
        it, in a callback, and cannot run the queue meanwhile."""
        run = self._run
        with run.lock:
            if not run.stopping:
                run.append(_job(fn, args))

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
        with run.lock:
            run.after, run.stopping = after, True
            run.changed.notify_all()
        if run.thread is None and after is not None:
            after()

    def join(self) -> None:
        """Wait until the thread has ended (not from the thread itself)."""
        thread = self._run.thread
        if thread is not None and not self.in_thread():
            thread.join()

    @staticmethod
    def _main(run: _Run) -> None:
        lock, jobs = run.lock, run.jobs
        while True:
            with lock:
                while not jobs:
                    if run.stopping:
                        break
                    run.idle = True
                    run.changed.wait(_POLL)
                    run.idle = False
                if not jobs:
                    break
                batch = list(jobs)
                jobs.clear()
            for fn, args, result, done, cost in batch:
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
                    run.done(cost)
                    if done is not None:
                        done.set()
        if run.after is not None:
            run.after()


def _job(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Job:
    """A job for ``fn(*args)``, costing its text arguments (4 bytes a
    character in a text past ASCII, as a str of them may take)."""
    cost = 0
    for arg in args:  # (a loop, not a generator: this runs per message)
        if isinstance(arg, str):
            cost += (len(arg) if arg.isascii() else 4 * len(arg)) + ARG_COST
    return (fn, args, None, None, cost)


def _put_nowait(run: _Run, job: _Job) -> bool:
    """Put ``job`` if there is room now, in jobs and in characters."""
    with run.lock:
        if not run.fits(job[4]):
            return False
        run.append(job)
        return True


def _put(run: _Run, job: _Job) -> bool:
    """Put ``job`` once there is room; False if the thread was told to stop first."""
    with run.lock:
        while not run.stopping and not run.fits(job[4]):
            run.blocked += 1
            try:
                run.changed.wait(_POLL)
            finally:
                run.blocked -= 1
        if run.stopping:
            return False
        run.append(job)
        return True

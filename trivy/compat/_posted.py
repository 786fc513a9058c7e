"""Calls a program's threads hand to the bus thread without waiting for them.

``trio.from_thread.run_sync`` costs a round trip between two threads: about
100 µs, so a program sending from its own thread sent 20 times fewer texts
a second than ivy-python's. A send needs no answer from the bus thread (its
count is taken in the caller's thread: :mod:`trivy._thread_counts`), so it
is posted instead:

- in order: the bus thread runs posted calls in the order they were
  posted; a call that waits for its result while calls its thread posted
  wait is posted too (:meth:`PostedCalls.call`, from ``BusThread.call``),
  other threads' calls (``stop()``) do not wait for them;
- in slices: one wake-up of the bus thread runs what was posted meanwhile,
  for :data:`RUN_SLICE` (the clock looked at after each call), then lets
  the bus's tasks run;
- bounded: a thread that posts while :data:`MAX_POSTED_BYTES` wait blocks
  until the bus thread took them, as ivy-python's send blocks while a
  socket's buffer is full.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from time import perf_counter
from typing import TypeVar

import trio

from .. import IvyBus, IvyIllegalStateError
from ._constants import error

__all__ = ["MAX_POSTED_BYTES", "POSTED_OVERHEAD", "RUN_SLICE", "PostedCalls"]

#: Bytes of posted calls that may wait for the bus thread; past it, posting
#: waits. Counted by :meth:`PostedCalls.post`'s ``size``.
MAX_POSTED_BYTES = 4 * 1024 * 1024
#: What a posted call costs besides its text (the closure, its cell, the
#: queue's slot), in bytes.
POSTED_OVERHEAD = 256
#: Seconds the bus thread runs posted calls before it lets its tasks run.
RUN_SLICE = 0.002

#: Calls taken from the queue at once (one lock for them); the clock is
#: looked at after each call, and those not run go back first in line.
_BATCH = 16
#: How often a thread waiting for its posted call looks whether the bus stopped (s).
_POLL = 0.2
T = TypeVar("T")

#: A call ``fn(bus)``, or a text: ``bus.send_nowait(text)``, the usual one,
#: posted without a closure.
PostedCall = Callable[[IvyBus], object] | str


class PostedCalls:
    """The calls posted to one bus thread (see the module's docstring).

    :meth:`open` and :meth:`close` are called by the bus thread, around the
    time its bus runs; :meth:`post` from any other thread.
    """

    def __init__(self) -> None:
        #: (call, size, the posting thread's ident)
        self._calls: collections.deque[tuple[PostedCall, int, int]] = collections.deque()
        #: Calls waiting, by posting thread (its later waited calls go after them).
        self._by_thread: collections.Counter[int] = collections.Counter()
        self._full = 0  # (posters waiting for room)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._bytes = 0
        self._scheduled = False  # (a run of the bus thread is due)
        self._bus: IvyBus | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def waiting_bytes(self) -> int:
        """Bytes of the calls posted and not yet taken by the bus thread."""
        return self._bytes

    def open(self, bus: IvyBus) -> None:
        """The bus is up: posted calls run on it (in the bus thread)."""
        with self._lock:
            self._bus = bus
            self._token = trio.lowlevel.current_trio_token()

    def close(self) -> None:
        """The bus is gone: what waits is dropped, and posting is refused."""
        with self._lock:
            self._bus = self._token = None
            self._calls.clear()
            self._by_thread.clear()
            self._bytes = 0
            self._scheduled = False
            self._room.notify_all()

    def post(self, call: PostedCall, size: int) -> bool:
        """Have the bus thread run ``call(bus)`` (a text: send it); whether it
        was taken (not if the bus is not running). ``size``: the bytes it
        holds until it runs.

        Waits while :data:`MAX_POSTED_BYTES` are posted already.
        """
        poster = threading.get_ident()
        with self._lock:
            token = self._token
            if token is None:
                return False
            while self._bytes >= MAX_POSTED_BYTES:
                self._full += 1
                try:
                    self._room.wait()
                finally:
                    self._full -= 1
                if self._token is not token:
                    return False  # the bus stopped meanwhile
            self._calls.append((call, size, poster))
            self._by_thread[poster] += 1
            self._bytes += size
            if not self._scheduled:
                try:
                    token.run_sync_soon(self._run_slice)
                except trio.RunFinishedError:
                    self._calls.pop()
                    self._by_thread -= collections.Counter({poster: 1})
                    self._bytes -= size
                    return False
                self._scheduled = True
            return True

    @property
    def waiting(self) -> bool:
        """Whether calls this thread posted wait for the bus thread."""
        return self._by_thread.get(threading.get_ident(), 0) > 0

    def call(self, fn: Callable[[IvyBus], T]) -> T:
        """Post ``fn(bus)`` and wait for its result (or exception): what this
        thread posted before runs first, in the bus thread's slices.

        Raises:
          IvyIllegalStateError: the bus stopped before it ran.
        """
        done = threading.Event()
        results: list[T] = []
        failures: list[BaseException] = []

        def run(bus: IvyBus) -> None:
            try:
                results.append(fn(bus))
            except BaseException as exc:  # (raised in the caller's thread, not here)
                failures.append(exc)
            finally:
                done.set()

        token = self._token
        if not self.post(run, POSTED_OVERHEAD):
            raise IvyIllegalStateError("not running")
        while not done.wait(_POLL):
            if self._token is not token:  # (stopped: what was posted is dropped)
                raise IvyIllegalStateError("not running")
        if failures:
            raise failures[0]
        return results[0]

    def _taken(self, batch: list[tuple[PostedCall, int, int]], ran: int) -> None:
        """The first ``ran`` calls of ``batch`` have run: the rest go back first."""
        with self._lock:
            if self._bus is None:  # (closed meanwhile: nothing waits any more)
                return
            by_thread = self._by_thread
            for _, size, poster in batch[:ran]:
                self._bytes -= size
                if by_thread[poster] > 1:
                    by_thread[poster] -= 1
                else:
                    del by_thread[poster]
            if ran < len(batch):
                self._calls.extendleft(reversed(batch[ran:]))
            if self._full:
                self._room.notify_all()

    def _run_slice(self) -> None:
        """Run posted calls for :data:`RUN_SLICE`; schedule the rest."""
        until = perf_counter() + RUN_SLICE
        while True:
            with self._lock:
                calls, bus = self._calls, self._bus
                if not calls or bus is None:
                    self._scheduled = False
                    return
                batch = [calls.popleft() for _ in range(min(len(calls), _BATCH))]
            ran = 0
            for call, _, _ in batch:
                ran += 1
                try:
                    if isinstance(call, str):
                        bus.send_nowait(call)
                    else:
                        call(bus)
                except IvyIllegalStateError:
                    pass  # the bus stopped, or the peer left, since it was posted
                except Exception:  # (one bad call loses nothing else; a raise here ends trio.run)
                    error("a call posted to the Ivy bus failed", exc_info=True)
                if perf_counter() >= until:  # (each call: one may cost a send's whole budget)
                    break
            self._taken(batch, ran)
            if ran < len(batch) or perf_counter() >= until:
                break

        token = self._token
        if token is not None:  # (still scheduled: the rest waits for the next run)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._run_slice)

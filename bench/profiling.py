"""Profile a benchmark agent: every thread's Python calls, into one pstats file.

:func:`profiled` is what ``python -m bench.agents ... --profile PATH`` runs
the agent under. trivy runs in one thread; ivy-python handles each peer in
a thread of its own, so every thread started meanwhile gets a profiler of
its own, and the profiles of all of them (the threads still running after a
short wait left out) are merged into ``PATH``. Each thread's profiler
counts that thread's CPU time, so a thread blocked on a socket or a lock
costs nothing there.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["profiled"]

#: Seconds the threads still running at the end get to finish.
THREAD_GRACE = 2.0


@contextmanager
def profiled(path: str) -> Iterator[None]:
    """Profile the block, and the threads it starts, into ``path``.

    ``cpu:PATH`` profiles nothing: the process's CPU seconds are written to
    ``PATH.cpu`` only (as they are, with a profile, to ``path.cpu``).
    """
    if path.startswith("cpu:"):
        began = time.process_time()
        try:
            yield
        finally:
            with open(path[4:] + ".cpu", "w") as cpu:
                cpu.write(str(time.process_time() - began))
        return
    finished: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()
            with lock:
                finished.append(profile)

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    began = time.process_time()
    main.enable()
    try:
        yield
    finally:
        main.disable()
        deadline = time.monotonic() + THREAD_GRACE
        for thread in threading.enumerate():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        threading.Thread.run = original_run  # type: ignore[method-assign]
        with lock:
            profiles: list[Any] = [main, *finished]
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)
        with open(path + ".cpu", "w") as cpu:
            cpu.write(str(time.process_time() - began))

"""trio as a guest of Tkinter's main loop.

::

    root = tkinter.Tk()
    ...                                   # build the window
    trivy.gui.tk.run_in_tk(root, main)    # main: async, e.g. opens a bus

Tk has one call that other threads may make: a Tcl command, which tkinter
hands to the main loop's thread (Tcl is built with threads). Each call
trio asks for is queued, and a Tcl ``after 0`` runs the queue's next entry
in the main loop.
"""

from __future__ import annotations

import tkinter
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._guest import GuestRun

__all__ = ["run_in_tk", "start_in_tk"]

T = TypeVar("T")


def start_in_tk(
    root: tkinter.Misc, async_fn: Callable[..., Awaitable[T]], *args: Any
) -> GuestRun[T]:
    """Start ``async_fn(*args)`` as a guest of ``root``'s main loop; returns at once.

    Call it from Tk's thread, before ``root.mainloop()`` or from a Tk
    callback. The run's steps happen once the main loop runs. The main
    loop must keep running until the run is done: leave the window by
    :meth:`GuestRun.cancel`, and destroy it from a done callback.
    """
    calls: deque[Callable[[], object]] = deque()

    def next_call() -> None:
        calls.popleft()()

    command = root.register(next_call)

    def run_sync_soon(fn: Callable[[], object]) -> None:
        calls.append(fn)  # (deque.append is atomic: any thread)
        root.tk.call("after", 0, command)

    run: GuestRun[T] = GuestRun()
    run.start(
        async_fn,
        *args,
        run_sync_soon_threadsafe=run_sync_soon,
        run_sync_soon_not_threadsafe=run_sync_soon,
    )
    return run


def run_in_tk(root: tkinter.Tk, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T | None:
    """Run ``async_fn(*args)`` in ``root``'s main loop, until both end.

    Closing the window cancels the run; when the run ends (cancelled or
    not), the window is destroyed and the main loop returns.

    Returns:
      what ``async_fn`` returned, or None if it was cancelled; raises what
      it raised.
    """
    run = start_in_tk(root, async_fn, *args)
    root.protocol("WM_DELETE_WINDOW", run.cancel)
    run.add_done_callback(lambda _run: root.destroy())
    root.mainloop()
    return run.result()

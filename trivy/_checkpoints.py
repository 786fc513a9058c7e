"""Cancel points cheap enough for the per-message paths.

trio's rule is that every async API call is a cancel point. A full
``checkpoint()`` per message would switch tasks and forfeit batching, and
even a call to ``checkpoint_if_cancelled()`` costs a fifth of a send. What
that function tests is one attribute of the current task, so the per-message
paths (``send``, a subscription's ``receive`` and ``__anext__``) read it
inline, and call ``checkpoint_if_cancelled()`` only when it will raise::

    try:
        cancelled = self._run_locals["task"]._cancel_status.effectively_cancelled
    except (KeyError, AttributeError):  # not what this trio has: the sure way
        cancelled = True
    if cancelled:
        await trio.lowlevel.checkpoint_if_cancelled()

``self._run_locals`` is :func:`run_locals`, taken when the object is made
(always in the trio thread that will use it): trio's per-thread run state
as a plain dict, which is read in a third of the time the thread-local
object takes.

The names are trio's internals; if a trio release changes them, the
``except`` makes every call take the public path, correct and slower, and
``test_conventions.py`` still shows each call is a cancel point.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RUN_CONTEXT", "run_locals"]

RUN_CONTEXT: Any
try:
    from trio._core._run import GLOBAL_RUN_CONTEXT as RUN_CONTEXT
except ImportError:  # pragma: no cover - another trio's layout
    RUN_CONTEXT = None


def run_locals() -> dict[str, Any]:
    """This thread's trio run state (``task`` is the running task), as a dict.

    An empty dict where trio's internals differ: the readers then always
    take the public, slower path.
    """
    try:
        state: dict[str, Any] = RUN_CONTEXT.__dict__
    except AttributeError:  # pragma: no cover - another trio's layout
        return {}
    return state

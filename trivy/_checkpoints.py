"""Cancel points cheap enough for the per-message paths.

trio's rule is that every async API call is a cancel point. A full
``checkpoint()`` per message would switch tasks and forfeit batching, and
even a call to ``checkpoint_if_cancelled()`` costs a fifth of a send. What
that function tests is one attribute of the current task, so the per-message
paths (``send``, a subscription's ``receive`` and ``__anext__``) read it
inline from :data:`RUN_CONTEXT`, and call ``checkpoint_if_cancelled()`` only
when it will raise::

    try:
        cancelled = RUN_CONTEXT.task._cancel_status.effectively_cancelled
    except AttributeError:  # not what this trio has: take the slow, sure way
        cancelled = True
    if cancelled:
        await trio.lowlevel.checkpoint_if_cancelled()

The names are trio's internals; if a trio release changes them, the
``except`` makes every call take the public path, correct and slower, and
``test_conventions.py`` still shows each call is a cancel point.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RUN_CONTEXT"]

RUN_CONTEXT: Any
try:
    from trio._core._run import GLOBAL_RUN_CONTEXT as RUN_CONTEXT
except ImportError:  # pragma: no cover - another trio's layout
    RUN_CONTEXT = None

"""Cancel points cheap enough for the per-message paths.

trio's rule is that every async API call is a cancel point. A full
``checkpoint()`` per message would also switch tasks and forfeit batching,
and even ``checkpoint_if_cancelled()`` costs about a fifth of a send; what it
tests is one attribute of the current task. :func:`cancel_pending` reads that
attribute, so that hot paths call ``checkpoint_if_cancelled()`` only when it
will raise.
"""

from __future__ import annotations

from trio.lowlevel import current_task

__all__ = ["cancel_pending"]


def cancel_pending() -> bool:
    """Whether the current task's next checkpoint would raise ``Cancelled``.

    True as well when trio's internals are not what this reads: the caller
    then does the real ``checkpoint_if_cancelled()``, which stays correct.
    """
    try:
        return bool(current_task()._cancel_status.effectively_cancelled)
    except AttributeError:  # pragma: no cover - another trio's internals
        return True

"""The one rule for calling user code: call it; if it returns an awaitable, await it.

It holds for :meth:`~trivy.IvyBus.bind` callbacks, timers and ``on_die``
alike, so a plain function, an ``async def`` and a lambda returning a
coroutine all work the same way. Callbacks the bus runs for itself (a
binding, a timer) never stop it: :func:`call_logged` logs what they raise,
20 tracebacks at once, then one a second with the count of the others (a
callback that fails on every message a peer floods must not fill the disk,
nor spend the event loop's time formatting tracebacks).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

from ._logs import LogLimiter

__all__ = ["Callback", "call_logged", "call_user"]

logger = logging.getLogger("trivy")
_failures = LogLimiter(logger)

#: A user callback: sync, or returning an awaitable.
Callback = Callable[..., "Awaitable[Any] | Any"]


async def call_user(callback: Callback, *args: Any) -> Any:
    """Call ``callback(*args)``, awaiting its result if it is awaitable."""
    result = callback(*args)
    if result is not None and inspect.isawaitable(result):
        result = await result
    return result


def call_logged(callback: Callback, args: tuple[Any, ...], what: object) -> Awaitable[None] | None:
    """Call ``callback(*args)`` for the bus: what it raises is logged, never raised.

    Returns None once it is done, or, when it returned an awaitable, an
    awaitable that finishes it (logging what that raises): the caller
    awaits it, or runs it as a task. A plain function thus costs no
    coroutine, which matters on the per-message path. ``what`` names the
    callback's purpose in the log (a binding's regexp, "timer").
    """
    try:
        result = callback(*args)
    except Exception:
        _failures.exception("callback %r for %r raised", callback, what)
        return None
    if result is None:
        return None
    # (an async def's coroutine without inspect's call: this runs per message)
    if type(result) is CoroutineType or inspect.isawaitable(result):
        return _finish(result, callback, what)
    return None


async def _finish(result: Awaitable[Any], callback: Callback, what: object) -> None:
    try:
        await result
    except Exception:
        _failures.exception("callback %r for %r raised", callback, what)

"""The one rule for calling user code: call it; if it returns an awaitable, await it.

It holds for :meth:`~trivy.IvyBus.bind` callbacks, timers and ``on_die``
alike, so a plain function, an ``async def`` and a lambda returning a
coroutine all work the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Callback", "call_user"]

#: A user callback: sync, or returning an awaitable.
Callback = Callable[..., "Awaitable[Any] | Any"]


async def call_user(callback: Callback, *args: Any) -> Any:
    """Call ``callback(*args)``, awaiting its result if it is awaitable."""
    result = callback(*args)
    if result is not None and inspect.isawaitable(result):
        result = await result
    return result

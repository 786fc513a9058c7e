"""A trio run hosted by another event loop: start, cancel, reach it, its result."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    import outcome  # (trio's own dependency)

__all__ = ["GuestRun"]

logger = logging.getLogger("trivy")

T = TypeVar("T")


class GuestRun(Generic[T]):
    """One trio run in guest mode: what the host's code holds of it.

    Made by :func:`trivy.gui.tk.start_in_tk` or :func:`trivy.gui.qt.start_in_qt`.
    The host calls :meth:`cancel` (a window closes) and :meth:`soon` (a
    widget's callback has work for trio); its done callbacks run when the
    run ends.
    """

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._cancel_asked = False
        self._on_done: list[Callable[[GuestRun[T]], object]] = []
        #: How the run ended (None while it runs).
        self.outcome: outcome.Outcome[T | None] | None = None

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self.outcome is not None

    def start(
        self,
        async_fn: Callable[..., Awaitable[T]],
        *args: Any,
        run_sync_soon_threadsafe: Callable[[Callable[[], object]], object],
        run_sync_soon_not_threadsafe: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        """Start ``async_fn(*args)`` as a guest, given the host's two ways of
        calling a function soon in its own thread (see
        :func:`trio.lowlevel.start_guest_run`)."""
        trio.lowlevel.start_guest_run(
            self._main,
            async_fn,
            *args,
            run_sync_soon_threadsafe=run_sync_soon_threadsafe,
            run_sync_soon_not_threadsafe=run_sync_soon_not_threadsafe,
            done_callback=self._finished,
        )

    def add_done_callback(self, callback: Callable[[GuestRun[T]], object]) -> None:
        """Call ``callback(run)`` in the host's thread when the run ends
        (at once if it has)."""
        if self.done:
            callback(self)
        else:
            self._on_done.append(callback)

    def cancel(self) -> None:
        """Cancel the run's function: its cleanup runs (an open bus says BYE
        to every peer), then the run ends. From any thread; never blocks."""
        self._cancel_asked = True
        if self._scope is not None:
            self.soon(self._scope.cancel)

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` in trio's context soon: from a widget's callback,
        which runs outside trio's steps. From any thread; never blocks.

        ``fn`` is synchronous (``bus.send_nowait``, a memory channel's
        ``send_nowait``, a cancel scope's ``cancel``...); an exception it
        raises is logged. Before the run's first step (it comes once the
        host's loop runs) and after its end, there is no trio to call:
        nothing is called (:meth:`cancel` alone is remembered).
        """
        if self._token is None or self.done:
            return

        def call() -> None:
            try:
                fn(*args)
            except Exception:  # (raising here would crash trio's run loop)
                logger.exception("GUI call %r failed", fn)

        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(call)

    def result(self) -> T | None:
        """The function's return value, or None if it was cancelled; raises
        what it raised.

        Raises:
          RuntimeError: the run has not ended.
        """
        if self.outcome is None:
            raise RuntimeError("the guest run has not ended")
        return self.outcome.unwrap()

    async def _main(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T | None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            if self._cancel_asked:
                self._scope.cancel()
            return await async_fn(*args)
        return None  # cancelled

    def _finished(self, result: outcome.Outcome[T | None]) -> None:
        self.outcome = result
        callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            callback(self)

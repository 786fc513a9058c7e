"""Running an agent for the duration of a block: :func:`open_ivy_bus`.

The sockets are opened before the nursery, so a port that cannot be had
raises a plain ``OSError``. On the way out, whatever ends the block (its
end, :meth:`~trivy.IvyBus.stop`, an obeyed DIE, an exception), BYE is
queued to every peer and every task of the bus is cancelled; each peer's
session then sends what it has, BYE last, under a shield and within
``leave_timeout``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from ._bus import IvyBus
from ._dispatch import DieCallback
from ._options import OPTION_NAMES, BusOptions, BusOptionsArgs

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["open_ivy_bus", "run_bus"]


def _interrupt_in(group: BaseExceptionGroup[BaseException]) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt of a group holding nothing else (Cancelled aside)."""
    interrupts, others = group.split(KeyboardInterrupt)
    if interrupts is None or (others is not None and others.split(trio.Cancelled)[1]):
        return None
    first: BaseException = interrupts
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, KeyboardInterrupt) else None


def open_ivy_bus(
    agent_name: str,
    bus: str | None = None,
    *,
    on_die: DieCallback | None = None,
    **options: Unpack[BusOptionsArgs],
) -> AbstractAsyncContextManager[IvyBus]:
    """Join an Ivy bus for the duration of an ``async with`` block.

    Args:
      agent_name: our name on the bus.
      bus: ``"NETWORKS:PORT"``; None → ``$IVYBUS`` → ``"127:2010"``.
      on_die: ``on_die(peer, num_id)``, called on DIE (awaited if it returns
        an awaitable); returning False refuses to die. By default the bus
        stops.
      **options: any other attribute of :class:`~trivy.BusOptions`, by
        keyword (``host="127.0.0.1"``, ``send_to_self=True``): it lists them
        all, with their defaults.

    Raises:
      TypeError: an unknown option (by the call itself).
      ValueError: a bad bus string, agent name or option (by the call).
      OSError: the listener or the UDP port could not be opened (raised
        as it is, on entering the block, before any task starts).
    """
    for name in options:
        if name not in OPTION_NAMES:  # as Python says it of a real parameter
            raise TypeError(f"open_ivy_bus() got an unexpected keyword argument {name!r}")
    # The converters resolve the bus, check the message classes and parse
    # the allowed networks.
    checked = BusOptions(agent_name=agent_name, bus=bus, **options)
    return run_bus(checked, on_die=on_die)


class _Outcome:
    """Notes the exception leaving a ``with`` block, and lets it go on."""

    error: BaseException | None = None

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.error = error


@asynccontextmanager
async def run_bus(
    options: BusOptions, *, on_die: DieCallback | None = None
) -> AsyncIterator[IvyBus]:
    """:func:`open_ivy_bus` for options already checked (the CLI's and compat's way in)."""
    ivy = IvyBus(options, on_die=on_die)
    ivy._open()
    body = _Outcome()
    try:
        async with trio.open_nursery() as nursery:
            ivy._start(nursery)
            try:
                with body, ivy._body_scope:
                    yield ivy
            finally:
                # BYE is queued to every peer; each session, cancelled, sends
                # what it has under a shield, within leave_timeout.
                ivy._say_bye()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A group is the body's exception, wrapped...
        if body.error is not None and group.exceptions == (body.error,):
            raise body.error from None
        # ...or Ctrl-C, which trio raises in whichever task runs: one of ours.
        interrupt = _interrupt_in(group)
        if interrupt is not None:
            raise interrupt from None
        # ...or a task's error: a broken socket (see Discovery), raised as it is.
        raise
    finally:
        ivy._discovery.close()

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
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType

import trio

from ._bus import IvyBus
from ._dispatch import DieCallback
from ._matching import MatchMode
from ._options import (
    DEFAULT_DEAD_HOST_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LEAVE_TIMEOUT,
    DEFAULT_SEND_BUFFER_LIMIT,
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_UNRESPONSIVE_TIMEOUT,
    BusOptions,
    OverflowPolicy,
)
from ._peer_regexps import MAX_PEER_REGEXP_BYTES, MAX_PEER_SUBSCRIPTIONS, MAX_REGEXP_LENGTH

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

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


@asynccontextmanager
async def open_ivy_bus(
    agent_name: str,
    bus: str | None = None,
    *,
    ready_message: str | None = None,
    on_die: DieCallback | None = None,
    host: str = "0.0.0.0",
    multicast_ttl: int = 64,
    multicast_interface: str | None = None,
    match_mode: MatchMode = "search",
    send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
    overflow: OverflowPolicy = "drop",
    java_newlines: bool = False,
    send_to_self: bool = False,
    message_classes: Iterable[str] | str | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    leave_timeout: float = DEFAULT_LEAVE_TIMEOUT,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    unresponsive_timeout: float = DEFAULT_UNRESPONSIVE_TIMEOUT,
    drop_unresponsive: bool = False,
    dead_host_timeout: float = DEFAULT_DEAD_HOST_TIMEOUT,
    allowed_networks: Iterable[str] | str | None = None,
    max_regexp_length: int = MAX_REGEXP_LENGTH,
    max_peer_subscriptions: int = MAX_PEER_SUBSCRIPTIONS,
    max_peer_regexp_bytes: int = MAX_PEER_REGEXP_BYTES,
) -> AsyncIterator[IvyBus]:
    """Join an Ivy bus for the duration of an ``async with`` block.

    Args:
      agent_name: our name on the bus.
      bus: ``"NETWORKS:PORT"``; None → ``$IVYBUS`` → ``"127:2010"``.
      on_die: ``on_die(peer, num_id)``, called on DIE (awaited if it returns
        an awaitable); returning False refuses to die. By default the bus
        stops.
      ready_message, host, multicast_ttl, multicast_interface, match_mode,
        send_buffer_limit, overflow, java_newlines, send_to_self, message_classes,
        stop_timeout, leave_timeout,
        handshake_timeout, stall_timeout, heartbeat_interval,
        unresponsive_timeout, drop_unresponsive, dead_host_timeout,
        allowed_networks, max_regexp_length, max_peer_subscriptions, max_peer_regexp_bytes:
        see :class:`~trivy.BusOptions`.

    Raises:
      ValueError: a bad bus string, agent name or option.
      OSError: the listener or the UDP port could not be opened (raised
        as it is, before any task starts).
    """
    options = BusOptions(
        agent_name=agent_name,
        bus=bus,  # the converter resolves str | None
        ready_message=ready_message,
        host=host,
        multicast_ttl=multicast_ttl,
        multicast_interface=multicast_interface,
        match_mode=match_mode,
        send_buffer_limit=send_buffer_limit,
        overflow=overflow,
        java_newlines=java_newlines,
        send_to_self=send_to_self,
        message_classes=message_classes,  # the converter checks the words
        stop_timeout=stop_timeout,
        leave_timeout=leave_timeout,
        handshake_timeout=handshake_timeout,
        stall_timeout=stall_timeout,
        heartbeat_interval=heartbeat_interval,
        unresponsive_timeout=unresponsive_timeout,
        drop_unresponsive=drop_unresponsive,
        dead_host_timeout=dead_host_timeout,
        allowed_networks=allowed_networks,  # the converter parses them
        max_regexp_length=max_regexp_length,
        max_peer_subscriptions=max_peer_subscriptions,
        max_peer_regexp_bytes=max_peer_regexp_bytes,
    )
    async with run_bus(options, on_die=on_die) as ivy:
        yield ivy


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

"""ivy-python's ``ivy.std_api``: the C-like functional API, over :mod:`trivy.compat.ivy`.

Port by changing one import::

    from trivy.compat.std_api import *

As in ivy-python, the module holds one agent: :func:`IvyInit` creates it,
:func:`IvyStart` joins the bus, :func:`IvyMainLoop` waits until it stops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .ivy import (
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyClient,
    IvyIllegalStateError,
    IvyRegexpAdded,
    IvyRegexpRemoved,
    IvyServer,
    IvyTimer,
    void_function,
)

__all__ = [
    "IvyApplicationConnected",
    "IvyApplicationDisconnected",
    "IvyBindDirectMsg",
    "IvyBindMsg",
    "IvyBindPong",
    "IvyBindRegexpChange",
    "IvyClient",
    "IvyGetApplication",
    "IvyGetApplicationHost",
    "IvyGetApplicationList",
    "IvyGetApplicationMessages",
    "IvyGetApplicationName",
    "IvyGetMessages",
    "IvyInit",
    "IvyMainLoop",
    "IvyRegexpAdded",
    "IvyRegexpRemoved",
    "IvySendDieMsg",
    "IvySendDirectMsg",
    "IvySendError",
    "IvySendMsg",
    "IvySendPing",
    "IvySetPongCallback",
    "IvyStart",
    "IvyStop",
    "IvyTimerModify",
    "IvyTimerRemove",
    "IvyTimerRepeatAfter",
    "IvyUnBindMsg",
    "IvyUnbindMsg",
    "void_function",
]

_IvyServer: IvyServer | None = None
_timers: dict[int, IvyTimer] = {}


def _agent() -> IvyServer:
    if _IvyServer is None:
        raise IvyIllegalStateError("IvyInit() has not been called")
    return _IvyServer


def IvyInit(
    agent_name: str,
    ready_msg: str | None = None,
    main_loop_type_ignored: int = 0,
    on_cnx_fct: Callable[..., Any] = void_function,
    on_die_fct: Callable[..., Any] = void_function,
) -> None:
    """Create the module's agent; call it once, before anything else.

    ``on_cnx_fct(agent, event)`` is the application callback,
    ``on_die_fct(agent, num_id)`` the die callback.

    Raises:
      IvyIllegalStateError: called twice.
    """
    global _IvyServer
    if _IvyServer is not None:
        raise IvyIllegalStateError("IvyInit() was already called")
    _IvyServer = IvyServer(agent_name, ready_msg, on_cnx_fct, on_die_fct)


def IvyStart(ivybus: str | None = None) -> None:
    """Join the bus (``None``: ``$IVYBUS``, then ``127:2010``)."""
    _agent().start(ivybus)


def IvyMainLoop() -> None:
    """Wait until the agent stops (:func:`IvyStop`, a DIE, or SIGINT)."""
    server = _agent()

    def on_sigint(*args: Any) -> None:
        # (the agent may have stopped already: a DIE, IvyStop from a callback)
        if server.isAlive():
            with suppress(IvyIllegalStateError):
                server.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
    while not server.server_termination.wait(5):
        pass


def IvyStop() -> None:
    """Leave the bus (BYE to every agent)."""
    _agent().stop()


def IvyBindMsg(on_msg_fct: Callable[..., Any], regexp: str) -> int:
    """Call ``on_msg_fct(agent, *groups)`` for each message matching ``regexp``."""
    return _agent().bind_msg(on_msg_fct, regexp)


def IvyBindDirectMsg(on_msg_fct: Callable[..., Any]) -> None:
    """Call ``on_msg_fct(agent, num_id, msg)`` for each direct message."""
    _agent().bind_direct_msg(on_msg_fct)


def IvyUnbindMsg(binding_id: int) -> str:
    """Remove a binding; returns its regexp (KeyError if unknown)."""
    return _agent().unbind_msg(binding_id)


def IvyUnBindMsg(binding_id: int) -> str:
    """Same as :func:`IvyUnbindMsg` (the name of the original C API)."""
    return IvyUnbindMsg(binding_id)


def IvyBindRegexpChange(regexp_change_callback: Callable[..., Any]) -> None:
    """Call ``fn(agent, event, num_id, regexp)`` when an agent (un)subscribes."""
    _agent().bind_regexp_change(regexp_change_callback)


def IvySendMsg(msg: str) -> int:
    """Send a message; returns how many subscriptions it matched."""
    return _agent().send_msg(msg)


def IvySendDieMsg(client: IvyClient) -> None:
    """Ask ``client`` to die."""
    client.send_die_message()


def IvySendDirectMsg(client: IvyClient, num_id: int, msg: str) -> None:
    """Send a direct message to ``client``."""
    client.send_direct_message(num_id, msg)


def IvySendError(client: IvyClient, num_id: int, error_msg: str) -> None:
    """Send an error message to ``client``."""
    client.send_error(num_id, error_msg)


def IvyGetApplicationList() -> list[str]:
    """The names of the connected agents."""
    return _agent().get_clients()


def IvyGetApplicationMessages(client: IvyClient) -> list[tuple[int, str]]:
    """The subscriptions of ``client``."""
    return _agent().get_client_bindings(client)


def IvyGetMessages() -> list[tuple[int, str]]:
    """Our subscriptions."""
    return _agent().get_subscriptions()


def IvyGetApplication(name: str) -> IvyClient | None:
    """One connected agent named ``name``, or None."""
    clients = _agent().get_client_with_name(name)
    return clients[0] if clients else None


def IvyGetApplicationName(client: IvyClient) -> str:
    """``client.agent_name``."""
    return client.agent_name


def IvyGetApplicationHost(client: IvyClient) -> str:
    """``client.fqdn`` (the address is ``client.ip``, the port ``client.port``)."""
    return client.fqdn


def IvyTimerRepeatAfter(count: int, delay_ms: int, callback: Callable[[], Any]) -> int:
    """Call ``callback()`` every ``delay_ms`` ms, ``count`` times (0: forever); its id."""
    timer = IvyTimer(_agent(), count, delay_ms, lambda _timer: callback())
    _timers[timer.id] = timer
    timer.start()
    return timer.id


def IvyTimerModify(timer_id: int, delay_ms: int) -> None:
    """Change a timer's delay (from its next tick)."""
    _timers[timer_id].delay = delay_ms


def IvyTimerRemove(timer_id: int) -> None:
    """Stop and forget a timer."""
    _timers.pop(timer_id).abort = True


def IvyBindPong(on_pong_fct: Callable[..., Any]) -> None:
    """Call ``on_pong_fct(agent, delta_seconds)`` for each PONG."""
    _agent().bind_pong(on_pong_fct)


def IvySetPongCallback(on_pong_fct: Callable[..., Any]) -> None:
    """Same as :func:`IvyBindPong`."""
    IvyBindPong(on_pong_fct)


def IvySendPing(client: IvyClient) -> None:
    """PING ``client``; the pong callback gets the round trip."""
    client.send_ping()

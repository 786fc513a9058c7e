"""ivy-python's ``IvyServer.handle_*`` methods: every bus event goes through one.

ivy-python agents often subclass ``IvyServer`` and override a ``handle_*``
method to see or change what happens on an event. trivy's compat server
routes each event of its bus through the same methods, with ivy-python's
signatures, on the server's callback thread; the defaults call the
registered callbacks. So an override still runs, and calling ``super()``
keeps the default.

What is internal to ivy-python's socket threads (``register_client``,
``serve_forever``) keeps its name with a documented meaning, since trivy's
core owns the connections.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from ._client import IvyClient
from ._constants import (
    IVY_SHOULD_NOT_DIE,
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyRegexpAdded,
    error,
    void_function,
)

__all__ = ["ClientsBinding", "ServerHandlers"]


class Bound(Protocol):
    """What :meth:`ServerHandlers.handle_msg` needs of one of our bindings."""

    @property
    def callback(self) -> Callable[..., Any]: ...


@attrs.define(eq=False)
class ClientsBinding:
    """The agents subscribed with one regexp: ``(client, their id)`` pairs."""

    pattern: re.Pattern[str]
    clients: list[tuple[IvyClient, int]] = attrs.field(factory=list)

    def regexp(self) -> str:
        """The regexp, as a string."""
        return self.pattern.pattern


class ServerHandlers:
    """The overridable ``handle_*`` layer of :class:`~trivy.compat.ivy.IvyServer`."""

    # (set by IvyServer.__init__)
    app_callback: Callable[..., Any]
    die_callback: Callable[..., Any]
    direct_callback: Callable[..., Any]
    regexp_change_callback: Callable[..., Any]
    pong_callback: Callable[..., Any]
    server_termination: threading.Event
    _trivy_lock: threading.Lock
    _trivy_bindings: Mapping[int, Bound]  # our bind_msg bindings, by id (under _lock)
    _trivy_clients_by_address: dict[tuple[str, int], IvyClient]
    _trivy_client_bindings: dict[IvyClient, dict[int, str]]
    # subscriptions reported while no regexp change callback was bound
    # (callback thread only)
    _trivy_unheard_regexps: dict[IvyClient, dict[int, str]]

    @staticmethod
    def run_callback(
        callback: Callable[..., Any],
        callback_description: str,
        agent: IvyClient | None,
        *args: Any,
        on_exc: Any = None,
        **kw: Any,
    ) -> Any:
        """Call ``callback(agent, *args, **kw)``; an exception is logged, ``on_exc`` returned."""
        try:
            return callback(agent, *args, **kw)
        except Exception:
            error("%s: exception raised", callback_description, exc_info=True)
            return on_exc

    # ---------------------------------------------------------- clients
    def handle_new_client(self, client: IvyClient) -> None:
        """An agent completed its handshake: the application callback learns it."""
        self.run_callback(
            self.app_callback, "application callback (connection)", client, IvyApplicationConnected
        )

    def register_client(
        self,
        ip: str,
        port: int,
        client_socket: Any = None,
        agent_id: str | None = None,
        agent_name: str | None = None,
    ) -> IvyClient | None:
        """The connected agent at ``ip:port``, or None.

        In ivy-python this makes the client of a new socket; trivy's core
        makes and owns every connection, so this opens nothing.
        """
        with self._trivy_lock:
            return self._trivy_clients_by_address.get((ip, port))

    def remove_client(
        self, ip: str, port: int, trigger_application_callback: bool = True
    ) -> IvyClient | None:
        """Forget the agent at ``ip:port`` (it left); the removed client, or None.

        Called when an agent disconnects; with ``trigger_application_callback``
        the application callback learns it.
        """
        with self._trivy_lock:
            client = self._trivy_clients_by_address.pop((ip, port), None)
            if client is not None:
                self._trivy_client_bindings.pop(client, None)
        if client is not None:
            self._trivy_unheard_regexps.pop(client, None)
        if client is not None and trigger_application_callback:
            self.run_callback(
                self.app_callback,
                "application callback (disconnection)",
                client,
                IvyApplicationDisconnected,
            )
        return client

    # ---------------------------------------------------- subscriptions
    def add_client_binding(self, client: IvyClient, binding_id: int, regexp: str) -> None:
        """Record that ``client`` subscribed with ``regexp`` under ``binding_id``."""
        with self._trivy_lock:
            self._trivy_client_bindings.setdefault(client, {})[binding_id] = regexp

    def remove_client_binding(self, client: IvyClient, binding_id: int) -> str | None:
        """Forget one subscription of ``client``; its regexp, or None."""
        with self._trivy_lock:
            return self._trivy_client_bindings.get(client, {}).pop(binding_id, None)

    def get_client_bindings(self, client: IvyClient) -> list[tuple[int, str]]:
        """The subscriptions of ``client``: ``(id, regexp)`` pairs (a copy, any thread)."""
        with self._trivy_lock:
            return list(self._trivy_client_bindings.get(client, {}).items())

    def handle_regexp_change(self, client: IvyClient, event: int, num_id: int, regexp: str) -> None:
        """An agent added (or replaced) or removed a subscription."""
        added = event == IvyRegexpAdded
        if self.regexp_change_callback is void_function:
            # Nobody listens yet: kept (as the state it leaves, so bounded)
            # for a callback bound later (see replay_regexp_changes).
            unheard = self._trivy_unheard_regexps.setdefault(client, {})
            if added:
                unheard[num_id] = regexp
            else:
                unheard.pop(num_id, None)
            return
        self.run_callback(
            self.regexp_change_callback,
            f"regexp change callback ({'add' if added else 'remove'})",
            client,
            event,
            num_id,
            regexp,
        )

    def replay_regexp_changes(self) -> None:
        """Tell the regexp change callback, bound late, of the subscriptions it missed.

        Runs on the callback thread, after the changes handled before the
        binding (those after it reached the callback itself).
        """
        unheard, self._trivy_unheard_regexps = self._trivy_unheard_regexps, {}
        for client, regexps in unheard.items():
            for num_id, regexp in regexps.items():
                self.handle_regexp_change(client, IvyRegexpAdded, num_id, regexp)

    # ------------------------------------------------------------ messages
    def handle_msg(self, client: IvyClient, idx: int, *params: Any) -> None:
        """A message matched our binding ``idx``: call its function with the groups."""
        with self._trivy_lock:
            binding = self._trivy_bindings.get(idx)
        if binding is not None:
            self.run_callback(binding.callback, f"callback of binding {idx}", client, *params)

    def handle_direct_msg(self, client: IvyClient, num_id: int, msg: str) -> None:
        """A direct message arrived."""
        self.run_callback(self.direct_callback, "direct message callback", client, num_id, msg)

    def handle_pong(self, client: IvyClient, delta: float) -> None:
        """The PONG of our PING arrived, ``delta`` seconds later."""
        self.run_callback(self.pong_callback, "pong callback", client, delta)

    def handle_die_message(self, msg_id: int, from_client: IvyClient) -> bool:
        """An agent asked us to die; True if we do (the die callback may refuse)."""
        answer = self.run_callback(self.die_callback, "die callback", from_client, msg_id)
        return bool(answer != IVY_SHOULD_NOT_DIE)

    # ------------------------------------------------------------ running
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Block until the server stops (ivy-python's thread body; trivy's bus
        runs in its own thread from :meth:`start`)."""
        self.server_termination.wait()

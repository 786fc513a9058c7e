"""ivy-python's ``IvyServer``: our agent, over a trivy bus in a background thread."""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import attrs
import trio

from .. import (
    BusEvent,
    BusOptions,
    DirectMessage,
    IvyBus,
    IvyIllegalStateError,
    Peer,
    PeerConnected,
    PeerDisconnected,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)
from .._local import wire_regexp
from .._matching import MatchMode
from .._open import run_bus
from ._bridge import BusThread
from ._callback_thread import CallbackThread
from ._client import IvyClient
from ._constants import (
    PING_TIMEOUT,
    IvyRegexpAdded,
    IvyRegexpRemoved,
    first_line,
    void_function,
    warn,
)
from ._handlers import ServerHandlers
from ._inspection import ServerInspection


@attrs.define(slots=True, eq=False)
class _Binding:
    """One :meth:`IvyServer.bind_msg`, kept across restarts of the bus."""

    callback: Callable[..., Any]
    regexp: str
    sub_id: int  # its id for the application
    bus_id: int | None = None  # its id on the bus, while bound on a running one


class IvyServer(ServerHandlers, ServerInspection):
    """An agent on an Ivy bus, with ivy-python's synchronous, thread-based API.

    Args:
      agent_name: our name on the bus.
      ready_msg: a text sent to each agent (through its subscriptions) when
        it connects.
      app_callback: ``app_callback(agent, event)`` with
        :data:`IvyApplicationConnected` or :data:`IvyApplicationDisconnected`.
      die_callback: ``die_callback(agent, num_id)`` on DIE; returning
        :data:`IVY_SHOULD_NOT_DIE` refuses to die.
      usesDaemons: whether the bus thread is a daemon thread.
      match_mode: (trivy) how other agents' regexps are applied to our
        texts; ``"match"`` (at the start) is ivy-python's behaviour.
      host: (trivy) the address the TCP listener binds to (None: as
        :class:`trivy.BusOptions` chooses, loopback alone on a loopback bus).

    Attributes:
      server_termination: a :class:`threading.Event` set when the server
        stops (:meth:`stop`, or an accepted DIE).
      port: our TCP port (0 before :meth:`start`).
      agent_id: our bus id ("" before :meth:`start`).
      ivybus: ``(broadcast address, port)`` while started, else None.
    """

    def __init__(
        self,
        agent_name: str,
        ready_msg: str | None = "",
        app_callback: Callable[..., Any] = void_function,
        die_callback: Callable[..., Any] = void_function,
        usesDaemons: bool = False,
        *,
        match_mode: MatchMode = "match",
        host: str | None = None,
    ) -> None:
        self.agent_name = agent_name
        self.ready_message = ready_msg
        self.app_callback = app_callback
        self.die_callback = die_callback
        self.direct_callback: Callable[..., Any] = void_function
        self.regexp_change_callback: Callable[..., Any] = void_function
        self.pong_callback: Callable[..., Any] = void_function
        self.usesDaemons = usesDaemons
        self.match_mode: MatchMode = match_mode
        self._trivy_host = host
        self.ivybus: tuple[str, int] | None = None
        self.port = 0
        self.agent_id = ""
        self._trivy_bridge = BusThread(self._bus_opened, self._on_event, self._bus_closed)
        self._trivy_callbacks = CallbackThread(
            f"trivy-compat-callbacks-{agent_name}", daemon=usesDaemons
        )
        self.server_termination: threading.Event = self._trivy_bridge.stopped
        self._trivy_lock = threading.Lock()  # guards _bindings and _next_id
        self._trivy_bindings: dict[int, _Binding] = {}
        self._trivy_unheard_regexps: dict[IvyClient, dict[int, str]] = {}
        self._trivy_next_id = itertools.count()
        self._trivy_clients: dict[Peer, IvyClient] = {}  # touched in the bus thread only
        # read from any thread, under _lock: the clients by address, and
        # each one's subscriptions (a copy of what the bus knows)
        self._trivy_clients_by_address: dict[tuple[str, int], IvyClient] = {}
        self._trivy_client_bindings: dict[IvyClient, dict[int, str]] = {}

    def __repr__(self) -> str:
        return f"<IvyServer {self.agent_name!r} port {self.port}>"

    def _client(self, peer: Peer) -> IvyClient:
        client = self._trivy_clients.get(peer)
        if client is None:
            client = self._trivy_clients[peer] = IvyClient(self, peer)
            with self._trivy_lock:
                self._trivy_clients_by_address[(peer.host, peer.port)] = client
        return client

    # ------------------------------------------------------------ lifecycle
    def start(self, ivybus: str | None = None) -> None:
        """Join the bus; returns once the bus listens.

        Raises:
          IvyIllegalStateError: the server is already started.
          ValueError: a bad bus string, agent name or ready message.
          OSError: the bus could not be joined (UDP port, listener).
        """
        if self.isAlive():
            raise IvyIllegalStateError("already started")
        # Checked here, in the caller's thread: a bad value is its ValueError.
        options = BusOptions(
            agent_name=self.agent_name,
            bus=ivybus or None,  # (ivy-python: empty means the default)
            ready_message=first_line(self.ready_message or "", "the ready message") or None,
            match_mode=self.match_mode,
        )
        if self._trivy_host is not None:
            options = attrs.evolve(options, host=self._trivy_host)
        address = (",".join(options.bus.networks), options.bus.port)
        open_bus = functools.partial(run_bus, options, on_die=self._on_die)
        name = f"trivy-compat-{self.agent_name}"
        self._trivy_callbacks.start()
        started = False
        try:
            self._trivy_bridge.start(open_bus, name=name, daemon=self.usesDaemons)
            started = True
        finally:
            if not started:  # the bus never came up: nothing will stop the callbacks
                self._trivy_callbacks.stop()
        self.ivybus = address

    def _bus_opened(self, bus: IvyBus) -> None:
        self.port = bus.port
        self.agent_id = bus.agent_id
        with self._trivy_lock:
            for binding in self._trivy_bindings.values():
                self._bind_on_bus(bus, binding)

    def _bus_closed(self) -> None:
        with self._trivy_lock:
            for binding in self._trivy_bindings.values():
                binding.bus_id = None
            left = list(self._trivy_clients_by_address)
        # The agents still connected are left too (stop(), an obeyed DIE):
        # the application callback hears of each, as in ivy-python.
        for host, port in left:  # (past the bound: a callback may be what stops it)
            self._trivy_callbacks.submit_last(self.remove_client, host, port)
        self._trivy_clients.clear()
        # once it has run what is queued (those removals first)
        self._trivy_callbacks.stop(after=self._forget_clients)
        self.ivybus = None

    def _forget_clients(self) -> None:
        with self._trivy_lock:
            self._trivy_clients_by_address.clear()
            self._trivy_client_bindings.clear()
        self._trivy_unheard_regexps.clear()

    def stop(self) -> None:
        """Leave the bus (BYE to every agent) and set :attr:`server_termination`.

        From a callback (the bus thread) the bus stops as soon as the callback
        returns; from any other thread, this waits until it has stopped.

        Raises:
          IvyIllegalStateError: the server is not running.
        """
        self._trivy_bridge.stop()
        self._trivy_callbacks.join()  # (not from a callback: it would wait for itself)

    def isAlive(self) -> bool:
        """Whether the server is running."""
        return self._trivy_bridge.is_alive()

    # -------------------------------------------------------------- events
    async def _on_event(self, event: BusEvent) -> None:
        # Every event goes through the overridable handle_* methods, which
        # run on the callback thread, in order.
        submit = self._trivy_callbacks.submit
        if isinstance(event, PeerConnected):
            await submit(self.handle_new_client, self._client(event.peer))
        elif isinstance(event, PeerDisconnected):
            # Its last event: the client is forgotten, a reconnection gets a new one.
            self._trivy_clients.pop(event.peer, None)
            await submit(self.remove_client, event.peer.host, event.peer.port)
        elif isinstance(event, (SubscriptionAdded, SubscriptionChanged, SubscriptionRemoved)):
            # ivy-python has no "changed" event: a replaced regexp is reported as added.
            client, sub_id = self._client(event.peer), event.subscription_id
            if isinstance(event, SubscriptionRemoved):
                await submit(self.remove_client_binding, client, sub_id)
                kind = IvyRegexpRemoved
            else:
                await submit(self.add_client_binding, client, sub_id, event.regexp)
                kind = IvyRegexpAdded
            await submit(self.handle_regexp_change, client, kind, sub_id, event.regexp)
        elif isinstance(event, DirectMessage):
            client = self._client(event.peer)
            await submit(self.handle_direct_msg, client, event.num_id, event.text)

    async def _on_die(self, peer: Peer, num_id: int) -> bool | None:
        call, client = self._trivy_callbacks.call, self._client(peer)  # (after what it sent before)
        dies = await self._trivy_bridge.in_order(call, self.handle_die_message, num_id, client)
        return None if dies else False

    def _start_ping(self, client: IvyClient) -> None:
        def start(bus: IvyBus) -> None:
            if client.peer not in bus.peers:  # raise in the caller, not in the ping task
                raise IvyIllegalStateError(f"{client.peer} is not connected")
            self._trivy_bridge.start_soon(functools.partial(self._ping, client))

        self._trivy_bridge.call(start)

    async def _ping(self, client: IvyClient, bus: IvyBus) -> None:
        try:
            with trio.fail_after(PING_TIMEOUT):
                delta = await bus.ping(client.peer)
        except (trio.TooSlowError, IvyIllegalStateError) as exc:
            warn("no PONG from %s: %s", client, exc)
            return
        await self._trivy_callbacks.submit(self.handle_pong, client, delta)

    # ------------------------------------------------------ subscriptions
    def _bind_on_bus(self, bus: IvyBus, binding: _Binding) -> None:
        sub_id = binding.sub_id

        bridge, callbacks = self._trivy_bridge, self._trivy_callbacks

        def deliver(peer: Peer, *groups: str) -> Awaitable[None] | None:
            # Messages come straight from the peer's task, the rest through
            # the event stream: what the stream has (its connection, what it
            # sent before) goes first. Usually it has nothing, and there is
            # room: handed on at once, with no coroutine.
            if bridge.in_order_now() and callbacks.submit_nowait(
                self.handle_msg, self._client(peer), sub_id, *groups
            ):
                return None
            return bridge.in_order(self._submit_msg, peer, sub_id, groups)

        binding.bus_id = bus.bind(deliver, binding.regexp)

    async def _submit_msg(self, peer: Peer, sub_id: int, groups: tuple[str, ...]) -> None:
        await self._trivy_callbacks.submit(self.handle_msg, self._client(peer), sub_id, *groups)

    def bind_msg(self, on_msg_fct: Callable[..., Any], regexp: str) -> int:
        """Call ``on_msg_fct(agent, *groups)`` for each message matching ``regexp``.

        May be called before :meth:`start`.

        Returns:
          the binding's id, for :meth:`unbind_msg`.

        Raises:
          ValueError: the regexp does not compile (or is one trivy refuses),
            before or after start: it is not kept (it failed the next start).
        """
        wire_regexp(regexp)  # (the check the bus makes as it binds)
        with self._trivy_lock:
            sub_id = next(self._trivy_next_id)
            binding = self._trivy_bindings[sub_id] = _Binding(on_msg_fct, regexp, sub_id)

        def bind(bus: IvyBus) -> None:
            # The bus may have bound it already, as it opened.
            if self._trivy_bindings.get(sub_id) is binding and binding.bus_id is None:
                self._bind_on_bus(bus, binding)

        # Not running: the bus binds it when it opens (at the next start).
        with suppress(IvyIllegalStateError):
            self._trivy_bridge.call(bind)
        return sub_id

    def unbind_msg(self, num_id: int) -> str:
        """Remove a binding; returns its regexp.

        Raises:
          KeyError: no binding has that id.
        """
        with self._trivy_lock:
            binding = self._trivy_bindings.pop(num_id)
            bus_id = binding.bus_id
        if bus_id is not None:
            with suppress(IvyIllegalStateError, KeyError):  # the bus stopped meanwhile
                self._trivy_bridge.call(lambda bus: bus.unbind(bus_id))
        return binding.regexp

    def get_subscriptions(self) -> list[tuple[int, str]]:
        """Our bindings: ``(id, regexp)`` pairs."""
        with self._trivy_lock:
            return [(sub_id, b.regexp) for sub_id, b in self._trivy_bindings.items()]

    def bind_direct_msg(self, on_direct_msg_fct: Callable[..., Any]) -> None:
        """Call ``on_direct_msg_fct(agent, num_id, msg)`` for each direct message."""
        self.direct_callback = on_direct_msg_fct

    def bind_regexp_change(self, on_regexp_change_callback: Callable[..., Any]) -> None:
        """Call ``fn(agent, event, num_id, regexp)`` when an agent (un)subscribes.

        ``event`` is :data:`IvyRegexpAdded` or :data:`IvyRegexpRemoved`.
        Bound after :meth:`start` (ivy-python's examples do), it first hears
        of the subscriptions reported before it was bound, as added: none
        is lost to the race between the first peers and the binding.
        """
        first = self.regexp_change_callback is void_function
        self.regexp_change_callback = on_regexp_change_callback
        if first and self.isAlive():
            with suppress(IvyIllegalStateError):
                self._trivy_callbacks.submit_from_thread(self.replay_regexp_changes)

    def bind_pong(self, on_pong_callback: Callable[..., Any]) -> None:
        """Call ``on_pong_callback(agent, delta_seconds)`` for each PONG."""
        self.pong_callback = on_pong_callback

    # ------------------------------------------------------------ sending
    def send_msg(self, message: str, *, to: IvyClient | None = None) -> int:
        """Send ``message`` to every subscription it matches (only ``to``'s if given).

        Never blocks: an agent whose output buffer is full misses it (trivy's
        ``send_nowait``).

        Returns:
          the number of MSGs sent (0 when not running).
        """
        peer, message = None if to is None else to.peer, first_line(message, "the text")
        bridge = self._trivy_bridge
        if peer is None and not bridge.in_bus_thread():
            # Counted here and posted to the bus thread, not waited for: a
            # round trip between the threads would cost each send ~100 µs.
            count = bridge.send_posted(message)
            if count is not None:
                return count

        def send(bus: IvyBus) -> int:
            if peer is None:
                return bus.send_nowait(message)
            if peer not in bus.peers:
                return 0  # gone meanwhile
            return bus.send_nowait(message, to=peer)

        try:
            return self._trivy_bridge.call(send)
        except IvyIllegalStateError:
            return 0

    def send_direct_message(
        self, agent_name: str, num_id: int, msg: str, stop_on_first: bool = True
    ) -> bool:
        """Send a direct message to the agent(s) named ``agent_name``.

        Returns:
          True if at least one was sent.
        """

        def send(bus: IvyBus) -> bool:
            sent = False
            for peer in bus.peers_named(agent_name):
                sent = bus.send_direct(peer, num_id, msg) or sent  # (False: over its limit)
                if sent and stop_on_first:
                    break
            return sent

        try:
            return self._trivy_bridge.call(send)
        except IvyIllegalStateError:
            return False

    def send_ready_message(self, client: IvyClient) -> None:
        """Send the ready message to ``client``."""
        if self.ready_message:
            self.send_msg(self.ready_message, to=client)

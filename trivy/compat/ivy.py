"""ivy-python's ``ivy.ivy`` API (:class:`IvyServer`, :class:`IvyTimer`...) over trivy.

Port an ivy-python agent by changing one import::

    from trivy.compat.ivy import IvyServer

:meth:`IvyServer.start` runs a trivy bus (:func:`trivy.open_ivy_bus`) under
``trio.run`` in a background thread and returns once the bus listens.
Callbacks run in that thread, with ivy-python's signatures. Every public
method may be called from any thread: from another thread it goes through
``trio.from_thread.run_sync``; from a callback (the bus's own thread) it runs
directly.

What differs from ivy-python, and what is not supported, is listed in
``docs/compat.md``.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import trio

from .. import protocol
from .._bus import IvyBus, open_ivy_bus
from .._channels import EventStream
from .._errors import IvyIllegalStateError, IvyMalformedMessage, IvyProtocolError
from .._events import (
    BusEvent,
    DirectMessage,
    Peer,
    PeerConnected,
    PeerDisconnected,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)
from .._matching import MatchMode
from .._timers import Timer
from ..protocol import MsgType

__all__ = [
    "ADD_REGEXP",
    "ARG_END",
    "ARG_START",
    "BYE",
    "DEFAULT_IVYBUS",
    "DEFAULT_TTL",
    "DEL_REGEXP",
    "DIE",
    "DIRECT_MSG",
    "END_INIT",
    "END_REGEXP",
    "ERROR",
    "IVY_SHOULD_NOT_DIE",
    "MSG",
    "PING",
    "PONG",
    "PROTOCOL_VERSION",
    "START_INIT",
    "START_REGEXP",
    "IvyApplicationConnected",
    "IvyApplicationDisconnected",
    "IvyClient",
    "IvyHandler",
    "IvyIllegalStateError",
    "IvyMalformedMessage",
    "IvyProtocolError",
    "IvyRegexpAdded",
    "IvyRegexpRemoved",
    "IvyServer",
    "IvyTimer",
    "UDP_init_and_listen",
    "debug",
    "decode_MSG_params",
    "decode_ivybus",
    "decode_msg",
    "encode_message",
    "error",
    "is_multicast",
    "ivy_logformatter",
    "ivy_loghdlr",
    "ivylogger",
    "log",
    "trace",
    "void_function",
    "warn",
]

# ----------------------------------------------------------------- constants
BYE = int(MsgType.BYE)
ADD_REGEXP = int(MsgType.ADD_REGEXP)
MSG = int(MsgType.MSG)
ERROR = int(MsgType.ERROR)
DEL_REGEXP = int(MsgType.DEL_REGEXP)
END_REGEXP = END_INIT = int(MsgType.END_REGEXP)
START_REGEXP = START_INIT = int(MsgType.START_REGEXP)
DIRECT_MSG = int(MsgType.DIRECT_MSG)
DIE = int(MsgType.DIE)
PING = int(MsgType.PING)
PONG = int(MsgType.PONG)

ARG_START = protocol.ARG_START
ARG_END = protocol.ARG_END
DEFAULT_IVYBUS = protocol.DEFAULT_IVYBUS
PROTOCOL_VERSION = protocol.PROTOCOL_VERSION
#: Multicast TTL, as in ivy-python (trivy's own default is the same).
DEFAULT_TTL = 64

#: ``app_callback(agent, event)`` events.
IvyApplicationConnected = 1
IvyApplicationDisconnected = 2
#: ``regexp_change_callback(agent, event, num_id, regexp)`` events.
IvyRegexpAdded = 3
IvyRegexpRemoved = 4
#: What a die callback returns to refuse to die.
IVY_SHOULD_NOT_DIE = "Ivy Application Should Not Die"

#: Seconds a PING started by :meth:`IvyClient.send_ping` waits for its PONG.
PING_TIMEOUT = 30.0

# ------------------------------------------------------------------- logging
#: ivy-python's logger name; trivy's core logs under ``"trivy"``.
ivylogger = logging.getLogger("Ivy")
debug = ivylogger.debug
info = log = ivylogger.info
warn = ivylogger.warning
error = ivylogger.error
#: A stderr handler with ivy-python's format. Unlike ivy-python, it is not
#: attached to :data:`ivylogger` on import: the application decides.
ivy_loghdlr = logging.StreamHandler()
ivy_logformatter = logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s")
ivy_loghdlr.setFormatter(ivy_logformatter)

T = TypeVar("T")


def trace(*args: Any, **kw: Any) -> None:
    """ivy-python's trace hook: does nothing."""


def void_function(*arg: Any, **kw: Any) -> Any:
    """Accept any arguments and do nothing (the default callback)."""
    return None


# ----------------------------------------------------------------- functions
def is_multicast(ip: str) -> bool:
    """Whether ``ip`` is a multicast address (224.0.0.0–239.255.255.255)."""
    return protocol.is_multicast(ip)


def decode_ivybus(ivybus: str | None = None) -> tuple[str, int]:
    """``"NETWORKS:PORT"`` → ``(broadcast address, port)``.

    ``None`` or ``""`` falls back to ``$IVYBUS``, then to
    :data:`DEFAULT_IVYBUS`. Several networks are joined with commas.

    Raises:
      ValueError: a malformed bus string.
    """
    address = protocol.parse_bus(ivybus)
    return ",".join(address.networks), address.port


def decode_MSG_params(params: str) -> list[str]:
    """Split a MSG's parameters into its capture groups, as ivy-c reads them."""
    return list(protocol.split_msg_params(params))


def decode_msg(message: str) -> tuple[int, int, list[str]]:
    """One Ivy line (without its newline) → ``(msg_type, num_id, params)``.

    Raises:
      IvyMalformedMessage: the type or the id is not an integer.
    """
    decoded = protocol.decode(message)
    if decoded.type == MSG:
        return decoded.type, decoded.num_id, decode_MSG_params(decoded.params)
    params = decoded.params
    if params.endswith(ARG_END):
        params = params[:-1]
    return decoded.type, decoded.num_id, params.split(ARG_END)


def encode_message(msg_type: int, numerical_id: int, params: str | Sequence[str] = "") -> bytes:
    """Encode one line: a string is sent as is, a sequence as ``\\x03``-ended groups.

    Raises:
      ValueError: a parameter contains a newline.
    """
    return protocol.encode(msg_type, numerical_id, params)


def UDP_init_and_listen(*args: Any, **kw: Any) -> None:
    """Not supported: trivy's bus does its own discovery (see :meth:`IvyServer.start`)."""
    raise NotImplementedError(
        "UDP_init_and_listen is internal to ivy-python; trivy's bus runs discovery itself"
    )


class IvyHandler:
    """Not supported: ivy-python's per-connection thread; trivy uses a trio task."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        raise NotImplementedError("IvyHandler is internal to ivy-python; trivy has no equivalent")


# -------------------------------------------------------------------- client
class IvyClient:
    """Another agent on the bus, as ivy-python's callbacks receive it.

    Wraps a :class:`trivy.Peer`. The same object is handed to every callback
    about one connected peer, so ``send_msg(text, to=agent)`` works.

    Attributes:
      agent_name: its name; ip: its address; port: its TCP port;
      agent_id: its id when its announce told us (else None).
    """

    def __init__(self, server: IvyServer, peer: Peer) -> None:
        self._server = server
        self.peer = peer

    @property
    def agent_name(self) -> str:
        """The agent's name on the bus."""
        return self.peer.name

    @property
    def ip(self) -> str:
        """The address the agent connects from / listens on."""
        return self.peer.host

    @property
    def port(self) -> int:
        """The agent's TCP listening port."""
        return self.peer.port

    @property
    def agent_id(self) -> str | None:
        """The agent's bus-unique id, when known."""
        return self.peer.agent_id

    @property
    def fqdn(self) -> str:
        """The agent's host name (a DNS lookup: call it outside callbacks)."""
        return socket.getfqdn(self.ip)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IvyClient):
            return self.ip == other.ip and self.port == other.port
        if isinstance(other, (tuple, list)) and len(other) == 2:
            return bool(self.ip == other[0] and self.port == other[1])
        return False

    def __hash__(self) -> int:
        return hash((self.ip, self.port))

    def __repr__(self) -> str:
        return f"{self.ip}:{self.port} ({self.agent_name})"

    def __str__(self) -> str:
        return f"{self.agent_name}@{self.ip}:{self.port}"

    # ------------------------------------------------------------- sending
    def send_message(self, num_id: int, captures: Sequence[str]) -> None:
        """Send a MSG for the agent's subscription ``num_id`` with these groups."""
        self._server._write(self.peer, MsgType.MSG, num_id, tuple(captures))

    def send_direct_message(self, num_id: int, msg: str) -> None:
        """Send a direct message."""
        self._server._call(lambda bus: bus.send_direct(self.peer, num_id, msg))

    def send_die_message(self, num_id: int = 0, msg: str = "") -> None:
        """Ask the agent to die."""
        self._server._write(self.peer, MsgType.DIE, num_id, msg)

    def send_error(self, num_id: int, msg: str) -> None:
        """Send an error message."""
        self._server._call(lambda bus: bus.send_error(self.peer, num_id, msg))

    def send_ping(self) -> None:
        """PING the agent; its PONG calls the server's pong callback with the delay."""
        self._server._call(lambda bus: self._server._start_ping(bus, self))

    def wave_bye(self, num_id: int = 0) -> None:
        """Send BYE to the agent (it then closes the connection)."""
        self._server._write(self.peer, MsgType.BYE, num_id)


# -------------------------------------------------------------------- server
class _Binding:
    __slots__ = ("bus_id", "callback", "regexp")

    def __init__(self, callback: Callable[..., Any], regexp: str) -> None:
        self.callback = callback
        self.regexp = regexp
        self.bus_id: int | None = None  # set while bound on a running bus


class IvyServer:
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
      host: (trivy) the address the TCP listener binds to.

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
        host: str = "0.0.0.0",
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
        self.host = host
        self.server_termination = threading.Event()
        self.ivybus: tuple[str, int] | None = None
        self.port = 0
        self.agent_id = ""
        self._lock = threading.Lock()  # guards _bindings, _next_id, _bus
        self._bindings: dict[int, _Binding] = {}
        self._next_id = itertools.count()
        self._clients: dict[Peer, IvyClient] = {}  # touched in the bus thread only
        self._thread: threading.Thread | None = None
        self._thread_ident: int | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._bus: IvyBus | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<IvyServer {self.agent_name!r} port {self.port}>"

    # ------------------------------------------------------- thread plumbing
    def _in_bus_thread(self) -> bool:
        return threading.get_ident() == self._thread_ident

    def _call(self, fn: Callable[[IvyBus], T]) -> T:
        """Run ``fn(bus)`` in the bus thread and return its result.

        Raises:
          IvyIllegalStateError: the server is not running.
        """
        if self._in_bus_thread():
            return fn(self._running_bus())
        token = self._token
        if token is None:
            raise IvyIllegalStateError("not running")
        try:
            return trio.from_thread.run_sync(lambda: fn(self._running_bus()), trio_token=token)
        except trio.RunFinishedError:
            raise IvyIllegalStateError("not running") from None

    def _running_bus(self) -> IvyBus:
        bus = self._bus
        if bus is None or not bus.running:
            raise IvyIllegalStateError("not running")
        return bus

    def _write(
        self, peer: Peer, msg_type: MsgType, num_id: int, params: str | Sequence[str] = ""
    ) -> None:
        """Send one protocol message to one peer (ivy-python's IvyClient offers it)."""
        self._call(lambda bus: bus.send_raw(peer, msg_type, num_id, params))

    def _client(self, peer: Peer) -> IvyClient:
        client = self._clients.get(peer)
        if client is None:
            client = self._clients[peer] = IvyClient(self, peer)
        return client

    def _run_callback(self, callback: Callable[..., Any], what: str, *args: Any) -> Any:
        try:
            return callback(*args)
        except Exception:
            error("%s: exception raised", what, exc_info=True)
            return None

    # ------------------------------------------------------------ lifecycle
    def start(self, ivybus: str | None = None) -> None:
        """Join the bus; returns once the bus listens.

        Raises:
          IvyIllegalStateError: the server is already started.
          ValueError: a bad bus string.
          OSError: the bus could not be joined (UDP port, listener).
        """
        if self.isAlive():
            raise IvyIllegalStateError("already started")
        if self._thread is not None:  # stopped by a DIE or from a callback
            self._thread.join()
            self._thread = None
        address = decode_ivybus(ivybus)
        ready = threading.Event()
        failure: list[BaseException] = []
        self.server_termination.clear()
        thread = threading.Thread(
            target=self._thread_main,
            args=(ivybus, ready, failure),
            name=f"trivy-compat-{self.agent_name}",
            daemon=self.usesDaemons,
        )
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]
        self.ivybus = address

    def _thread_main(
        self, ivybus: str | None, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        self._thread_ident = threading.get_ident()
        try:
            trio.run(self._serve, ivybus, ready)
        except BaseException as exc:
            if ready.is_set():
                error("the Ivy bus thread crashed", exc_info=True)
            else:
                failure.append(exc)
        finally:
            with self._lock:
                self._bus = None
                self._token = None
                for binding in self._bindings.values():
                    binding.bus_id = None
            self._nursery = None
            self._thread_ident = None
            self._clients.clear()
            self.ivybus = None
            self.server_termination.set()
            ready.set()

    async def _serve(self, ivybus: str | None, ready: threading.Event) -> None:
        async with open_ivy_bus(
            self.agent_name,
            ivybus,
            ready_message=self.ready_message or None,
            on_die=self._on_die,
            host=self.host,
            match_mode=self.match_mode,
        ) as bus:
            self.port = bus.port
            self.agent_id = bus.agent_id
            events = bus.events()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with self._lock:
                    self._bus = bus
                    self._token = trio.lowlevel.current_trio_token()
                    for binding in self._bindings.values():
                        self._bind_on_bus(bus, binding)
                nursery.start_soon(self._dispatch, events)
                ready.set()
                await trio.sleep_forever()

    def stop(self) -> None:
        """Leave the bus (BYE to every agent) and set :attr:`server_termination`.

        From a callback (the bus thread) the bus stops as soon as the callback
        returns; from any other thread, this waits until it has stopped.

        Raises:
          IvyIllegalStateError: the server is not running.
        """
        thread = self._thread
        if thread is None or not self.isAlive():
            raise IvyIllegalStateError("not running")
        with suppress(IvyIllegalStateError):  # stopping already (an accepted DIE)
            self._call(lambda bus: bus.stop())
        if self._in_bus_thread():
            return
        thread.join()
        self._thread = None

    def isAlive(self) -> bool:
        """Whether the server is running."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self.server_termination.is_set()

    # -------------------------------------------------------------- events
    async def _dispatch(self, events: EventStream[BusEvent]) -> None:
        async with events:
            async for event in events:
                self._on_event(event)

    def _on_event(self, event: BusEvent) -> None:
        if isinstance(event, PeerConnected):
            self._run_callback(
                self.app_callback,
                "application callback (connection)",
                self._client(event.peer),
                IvyApplicationConnected,
            )
        elif isinstance(event, PeerDisconnected):
            client = self._client(event.peer)
            del self._clients[event.peer]
            self._run_callback(
                self.app_callback,
                "application callback (disconnection)",
                client,
                IvyApplicationDisconnected,
            )
        elif isinstance(event, (SubscriptionAdded, SubscriptionChanged)):
            self._run_callback(
                self.regexp_change_callback,
                "regexp change callback (add)",
                self._client(event.peer),
                IvyRegexpAdded,
                event.subscription_id,
                event.regexp,
            )
        elif isinstance(event, SubscriptionRemoved):
            self._run_callback(
                self.regexp_change_callback,
                "regexp change callback (remove)",
                self._client(event.peer),
                IvyRegexpRemoved,
                event.subscription_id,
                event.regexp,
            )
        elif isinstance(event, DirectMessage):
            self._run_callback(
                self.direct_callback,
                "direct message callback",
                self._client(event.peer),
                event.num_id,
                event.text,
            )

    def _on_die(self, peer: Peer, num_id: int) -> bool | None:
        answer = self._run_callback(self.die_callback, "die callback", self._client(peer), num_id)
        return False if answer == IVY_SHOULD_NOT_DIE else None

    def _start_ping(self, bus: IvyBus, client: IvyClient) -> None:
        if client.peer not in bus.peers:  # raise now, not in the ping task
            raise IvyIllegalStateError(f"{client.peer} is not connected")
        assert self._nursery is not None
        self._nursery.start_soon(self._ping, bus, client)

    async def _ping(self, bus: IvyBus, client: IvyClient) -> None:
        try:
            delta = await bus.ping(client.peer, timeout=PING_TIMEOUT)
        except (trio.TooSlowError, IvyIllegalStateError) as exc:
            warn("no PONG from %s: %s", client, exc)
            return
        self._run_callback(self.pong_callback, "pong callback", client, delta)

    # ------------------------------------------------------ subscriptions
    def _bind_on_bus(self, bus: IvyBus, binding: _Binding) -> None:
        callback = binding.callback

        def deliver(peer: Peer, *groups: str) -> None:
            callback(self._client(peer), *groups)

        binding.bus_id = bus.bind(deliver, binding.regexp)

    def bind_msg(self, on_msg_fct: Callable[..., Any], regexp: str) -> int:
        """Call ``on_msg_fct(agent, *groups)`` for each message matching ``regexp``.

        May be called before :meth:`start`.

        Returns:
          the binding's id, for :meth:`unbind_msg`.
        """
        binding = _Binding(on_msg_fct, regexp)
        with self._lock:
            sub_id = next(self._next_id)
            self._bindings[sub_id] = binding
            running = self._bus is not None
        if running:

            def bind(bus: IvyBus) -> None:
                if self._bindings.get(sub_id) is binding and binding.bus_id is None:
                    self._bind_on_bus(bus, binding)

            with suppress(IvyIllegalStateError):  # stopped meanwhile: bound at next start
                self._call(bind)
        return sub_id

    def unbind_msg(self, num_id: int) -> str:
        """Remove a binding; returns its regexp.

        Raises:
          KeyError: no binding has that id.
        """
        with self._lock:
            binding = self._bindings.pop(num_id)
            bus_id = binding.bus_id
        if bus_id is not None:
            with suppress(IvyIllegalStateError, KeyError):  # the bus stopped meanwhile
                self._call(lambda bus: bus.unbind(bus_id))
        return binding.regexp

    def get_subscriptions(self) -> list[tuple[int, str]]:
        """Our bindings: ``(id, regexp)`` pairs."""
        with self._lock:
            return [(sub_id, b.regexp) for sub_id, b in self._bindings.items()]

    def bind_direct_msg(self, on_direct_msg_fct: Callable[..., Any]) -> None:
        """Call ``on_direct_msg_fct(agent, num_id, msg)`` for each direct message."""
        self.direct_callback = on_direct_msg_fct

    def bind_regexp_change(self, on_regexp_change_callback: Callable[..., Any]) -> None:
        """Call ``fn(agent, event, num_id, regexp)`` when an agent (un)subscribes.

        ``event`` is :data:`IvyRegexpAdded` or :data:`IvyRegexpRemoved`.
        """
        self.regexp_change_callback = on_regexp_change_callback

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
        if to is None:

            def send(bus: IvyBus) -> int:
                return bus.send_nowait(message)

        else:
            peer = to.peer

            def send(bus: IvyBus) -> int:
                if peer not in bus.peers:
                    return 0  # gone meanwhile
                return bus.send_nowait(message, to=peer)

        try:
            return self._call(send)
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
                bus.send_direct(peer, num_id, msg)
                sent = True
                if stop_on_first:
                    break
            return sent

        try:
            return self._call(send)
        except IvyIllegalStateError:
            return False

    def send_ready_message(self, client: IvyClient) -> None:
        """Send the ready message to ``client``."""
        if self.ready_message:
            self.send_msg(self.ready_message, to=client)

    # --------------------------------------------------------- inspection
    def _peers(self) -> list[Peer]:
        try:
            return self._call(lambda bus: bus.peers)
        except IvyIllegalStateError:
            return []

    def get_clients(self) -> list[str]:
        """The names of the connected agents."""
        return [peer.name for peer in self._peers()]

    def get_client_with_name(self, name: str) -> list[IvyClient]:
        """The connected agents named ``name``."""
        try:
            return self._call(
                lambda bus: [self._client(peer) for peer in bus.peers if peer.name == name]
            )
        except IvyIllegalStateError:
            return []

    def get_client_bindings(self, client: IvyClient) -> list[tuple[int, str]]:
        """The subscriptions of ``client``: ``(id, regexp)`` pairs."""
        return list(client.peer.subscriptions.items())

    def get_client(self, ip: str, port: int) -> IvyClient:
        """The connected agent at ``ip:port``.

        Raises:
          ValueError: no such agent.
        """
        for client in self._clients_list():
            if client.ip == ip and client.port == port:
                return client
        raise ValueError("Client is not registered")

    def _clients_list(self) -> list[IvyClient]:
        try:
            return self._call(lambda bus: [self._client(peer) for peer in bus.peers])
        except IvyIllegalStateError:
            return []


# --------------------------------------------------------------------- timer
_timer_ids = itertools.count(1)


class IvyTimer:
    """Calls ``callback(timer)`` every :attr:`delay` ms, :attr:`nbticks` times (0: forever).

    A task of its server's bus (:meth:`trivy.IvyBus.start_timer`): it stops
    when the server stops. The first tick is immediate, as in ivy-python.
    Setting :attr:`delay` takes effect after the next tick; setting
    :attr:`abort` to True stops the timer (the callback is not called again).
    """

    def __init__(
        self,
        server: IvyServer,
        nbticks: int,
        delay_ms: float,
        callback: Callable[[IvyTimer], Any],
    ) -> None:
        if nbticks < 0:
            raise ValueError(f"nbticks cannot be negative: {nbticks}")
        self.server = server
        self.nbticks = nbticks
        self.callback = callback
        self.id = next(_timer_ids)
        self.daemon = server.usesDaemons
        self._delay = delay_ms
        self._abort = False
        self._started = False
        self._timer: Timer | None = None  # the trivy Timer, after the first tick
        self._finished = threading.Event()

    @property
    def delay(self) -> float:
        """The delay between two ticks, in milliseconds."""
        return self._delay

    @delay.setter
    def delay(self, delay_ms: float) -> None:
        self._delay = delay_ms
        timer = self._timer
        if timer is not None:
            timer.interval = delay_ms / 1000.0  # read by the timer at its next sleep

    @property
    def abort(self) -> bool:
        """Set to True to stop the timer."""
        return self._abort

    @abort.setter
    def abort(self, value: bool) -> None:
        self._abort = value
        timer = self._timer
        if value and timer is not None:
            with suppress(IvyIllegalStateError):  # the server stopped: so did the timer
                self.server._call(lambda bus: timer.cancel())

    def start(self) -> None:
        """Start ticking. A timer on a server that is not running ends at once.

        Raises:
          RuntimeError: the timer was already started.
        """
        if self._started:
            raise RuntimeError("timers can only be started once")
        self._started = True
        try:
            self.server._call(self._start_in_bus)
        except IvyIllegalStateError:
            warn("IvyTimer %s: its server is not running", self.id)
            self._finished.set()

    def _start_in_bus(self, bus: IvyBus) -> None:
        nursery = self.server._nursery
        assert nursery is not None
        nursery.start_soon(self._run, bus)

    async def _run(self, bus: IvyBus) -> None:
        try:
            if self._abort:
                return
            self._tick()
            if self.nbticks == 1 or self._abort or not bus.running:
                return
            count = self.nbticks - 1 if self.nbticks else 0
            self._timer = bus.start_timer(self._tick, self._delay / 1000.0, count=count)
            await self._timer.wait_finished()
        finally:
            self._finished.set()

    def _tick(self) -> None:
        if self._abort:
            if self._timer is not None:
                self._timer.cancel()
            return
        try:
            self.callback(self)
        except Exception:
            error("IvyTimer %s: callback raised", self.id, exc_info=True)

    def is_alive(self) -> bool:
        """Whether the timer was started and has not ended."""
        return self._started and not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the timer has ended (or ``timeout`` seconds)."""
        self._finished.wait(timeout)

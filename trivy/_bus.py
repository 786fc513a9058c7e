"""The facade: :class:`IvyBus` (:func:`~trivy.open_ivy_bus` runs it).

A nursery owns every task of the agent; leaving it says BYE to every peer.
This module only wires the parts together, each in a module of its own
(see docs/architecture.md).
"""

from __future__ import annotations

import logging
import socket

import trio

from ._callbacks import Callback
from ._channels import DEFAULT_MAX_BYTES, Subscription
from ._discovery import Discovery, new_agent_id
from ._dispatch import DieCallback, Dispatcher
from ._errors import IvyIllegalStateError
from ._event_streams import EventHub, EventStream, StreamOverflow
from ._events import BusEvent, DirectMessage, Peer
from ._local import LocalSubscriptions
from ._logs import SourceLogs
from ._matching import MatchMode
from ._options import BusOptions
from ._peer import PeerSession
from ._peer_sends import PeerSends
from ._peers import PeerSet, open_session
from ._requests import Requests
from ._routing import Router
from ._self_delivery import SelfDelivery
from ._timers import Timer, TimerCallback
from .protocol import BusAddress

__all__ = ["DEFAULT_MAX_BUFFER", "IvyBus"]

logger = logging.getLogger("trivy")

#: Default capacity of a subscription's or event stream's buffer, in items.
DEFAULT_MAX_BUFFER = 1000


class IvyBus(PeerSends):
    """An agent on an Ivy bus. Made by :func:`open_ivy_bus`; see it for options.

    Attributes:
      options: the validated :class:`~trivy.BusOptions`.
      agent_name: our name on the bus.
      agent_id: our bus-unique id (sent in the UDP announce).
      port: our TCP listening port.
      bus_address: the networks and UDP port we announce on.
      requests: request and reply over direct messages (:class:`~trivy.Requests`).
    """

    def __init__(self, options: BusOptions, *, on_die: DieCallback | None = None) -> None:
        self.options = options
        self.agent_name = options.agent_name
        self.bus_address: BusAddress = options.bus
        self.agent_id = ""
        self.port = 0
        self._peers = PeerSet.for_options(options)
        #: Log budgets by source host, across reconnects.
        self._source_logs = SourceLogs(logger)
        self._hub = EventHub()
        self._local = LocalSubscriptions(self._peers)
        self._router = Router(options, self._hub.emit_nowait)
        #: ivy-c's message filter: our classes (see :class:`~trivy.BusOptions`).
        self.message_classes = self._router.classes
        self._dispatcher = Dispatcher(
            local=self._local,
            peers=self._peers,
            router=self._router,
            hub=self._hub,
            ready_message=options.ready_message,
            on_die=on_die,
            stop=self.stop,
        )
        self._discovery = Discovery(
            options, serve=self._serve, is_connected=self._peers.is_connected
        )
        self.requests = Requests(self, self._dispatcher.answers)
        self._body_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._running = False  # started and not stopping: read on every send
        self._to_self = SelfDelivery.for_options(self._local, options)

    def __repr__(self) -> str:
        return f"<IvyBus {self.agent_name!r} on {self.bus_address} port {self.port}>"

    # ------------------------------------------------------------ inspection
    @property
    def running(self) -> bool:
        """Whether the bus is started and not stopping."""
        return self._running

    @property
    def match_mode(self) -> MatchMode:
        """How peers' regexps are applied to our texts (search/match/fullmatch)."""
        return self.options.match_mode

    @property
    def peers(self) -> list[Peer]:
        """The peers whose handshake is complete, in connection order."""
        return self._peers.ready_peers()

    @property
    def subscriptions(self) -> dict[int, str]:
        """Our own subscriptions: id → regexp (as sent to peers)."""
        return dict(self._local.items())

    def peer(self, name: str) -> Peer | None:
        """The first ready peer named ``name``, or None."""
        return next((p for p in self.peers if p.name == name), None)

    def peers_named(self, name: str) -> list[Peer]:
        """Every ready peer named ``name`` (Ivy names need not be unique)."""
        return [p for p in self.peers if p.name == name]

    async def wait_for_peer(self, name: str | None = None) -> Peer:
        """Wait until a peer named ``name`` (any peer if None) is ready.

        Bound the wait with ``trio.fail_after``. Subscriptions the peer made
        after its handshake may still be on their way: wait for a
        :class:`~trivy.SubscriptionAdded` event (in tests,
        :func:`trivy.testing.wait_for_subscription`).

        Raises:
          IvyIllegalStateError: the bus is not running (or stops meanwhile).
        """
        self._check_running()
        return await self._peers.wait_ready(name)

    # ------------------------------------------------------- our subscriptions
    def subscribe(
        self,
        regexp: str,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_buffer_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Subscription:
        """Subscribe to the texts matching ``regexp``; get them as a channel.

        ADD_REGEXP goes to every peer now; closing the subscription (leaving
        its ``async with`` block) sends DEL_REGEXP. While ``max_buffer``
        matches wait unread, or big ones (over 4 Ki) of ``max_buffer_bytes``
        in all (bytes, as counted: characters, four times past ASCII, and
        64 a group), reading from the sending peer
        pauses.

        Raises:
          ValueError: the regexp does not compile or contains a newline.
          IvyIllegalStateError: the bus is not running.
        """
        self._check_running()
        return self._local.subscribe(regexp, max_buffer, max_buffer_bytes)

    def bind(self, callback: Callback, regexp: str) -> int:
        """Call ``callback(peer, *groups)`` for each text matching ``regexp``.

        If the callback returns an awaitable (an ``async def``, or a lambda
        returning a coroutine), it is awaited. It runs in the task reading
        the sending peer, so a slow one slows that peer only. An exception
        in it is logged and never stops the bus.

        Returns:
          the subscription id, for :meth:`unbind`.

        Raises:
          ValueError: the regexp does not compile or contains a newline.
          IvyIllegalStateError: the bus is not running.
        """
        self._check_running()
        return self._local.bind(callback, regexp)

    def unbind(self, sub_id: int) -> str:
        """Remove a subscription (bound or channel); returns its regexp.

        A channel's iteration then ends (``EndOfChannel``) once what it
        buffered is read.

        Raises:
          KeyError: no subscription has that id.
        """
        return self._local.unbind(sub_id)

    def change_subscription(self, sub_id: int, regexp: str) -> None:
        """Replace the regexp of a subscription, keeping its id (ivy-c IvyChangeMsg).

        Raises:
          KeyError: no subscription has that id.
          ValueError: the regexp does not compile or contains a newline.
          IvyIllegalStateError: the bus is not running.
        """
        self._check_running()
        self._local.change(sub_id, regexp)

    def events(
        self,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: StreamOverflow = "drop",
        max_buffer_bytes: int = DEFAULT_MAX_BYTES,
    ) -> EventStream[BusEvent]:
        """A channel of every bus event from now on, until it is closed.

        When ``max_buffer`` events wait unread, ``overflow="drop"`` drops
        the next ones (counted in ``stream.dropped``; a peer joining or
        leaving, a DIE and congestion are kept up to twice the buffer), so
        a slow reader stalls nobody. ``"wait"`` loses nothing, but makes
        every peer's reader wait for this one. Big events (texts over 4 Ki
        characters) count against ``max_buffer_bytes`` as well (four bytes
        a character for a text past ASCII).
        """
        return self._hub.events(max_buffer, overflow, max_buffer_bytes)

    def direct_messages(
        self,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: StreamOverflow = "drop",
        max_buffer_bytes: int = DEFAULT_MAX_BYTES,
    ) -> EventStream[DirectMessage]:
        """A channel of the direct messages we receive from now on (see :meth:`events`)."""
        return self._hub.direct_messages(max_buffer, overflow, max_buffer_bytes)

    # --------------------------------------------------------------- sending
    def _check_running(self) -> None:
        if not self._running:
            raise IvyIllegalStateError(f"{self!r} is not running")

    def _session(self, peer: Peer) -> PeerSession:
        self._check_running()
        return self._peers.session_of(peer)

    async def send(self, text: str, *, to: Peer | None = None) -> int:
        """Send a text to every peer subscription it matches (``to``: one peer's only).

        Waits while a target peer's output buffer is over its limit (within
        ``stall_timeout``, see the liveness guide). It yields to the scheduler
        only when it waits and once per 1024 calls, which is what lets many
        sends leave in one write. A cancel point in batches: the first call
        after it yielded and every 16th call check for cancellation, so a
        cancellation lands within 16 calls; a call that raises ``Cancelled``
        sent nothing. With ``send_to_self``, our copy is queued with the
        peers' and delivered by a task of the bus; ``send`` waits while 1000
        of ours wait.

        Returns:
          the number of MSGs sent (0: nobody was interested).

        Raises:
          ValueError: the text contains a newline.
          IvyIllegalStateError: the bus is not running, or ``to`` is not connected.
        """
        if not self._running:
            self._check_running()
        router = self._router
        if router.sends_until_check:
            router.sends_until_check -= 1
        else:  # (a cancel point before anything is sent)
            await router.cancel_point()
        to_self = self._to_self if to is None else None
        if to_self is not None:  # (our own copy waits for room first, as all waits do)
            await to_self.wait_for_room()
            ours = to_self.matches(text)
        count = router.route(text, None if to is None else self._session(to), True)
        if to_self is not None:  # queued as the peers' copies are: in the same order
            to_self.put(ours)
            count += len(ours)
        if router.congested:
            router.sends_until_check = 0  # (the call after a wait checks at once)
            await router.wait_for_room()
        return count

    def send_nowait(self, text: str, *, to: Peer | None = None) -> int:
        """Send like :meth:`send`, never waiting.

        A peer whose output buffer is over its limit gets the overflow
        policy instead (``"drop"``: its MSG is dropped; ``"disconnect"``: it
        is disconnected) and a :class:`~trivy.Congestion` event is emitted.

        Returns:
          the number of MSGs queued.
        """
        self._check_running()
        count = self._router.route(text, None if to is None else self._session(to), False)
        if self._to_self is not None and to is None:
            count += self._to_self.queue_nowait(text)
        return count

    def start_timer(self, fn: TimerCallback, interval: float, *, count: int = 0) -> Timer:
        """Call ``fn()`` every ``interval`` s, ``count`` times (0: forever).

        ``fn`` may return an awaitable, which is awaited. The timer is a
        task of the bus: it ends with it, or on :meth:`Timer.cancel`.
        """
        self._check_running()
        assert self._nursery is not None
        timer = Timer(fn, interval, count)
        self._nursery.start_soon(timer.run)
        return timer

    def stop(self) -> None:
        """Leave the bus: BYE to every peer, every task of the bus cancelled.

        It cancels the body of the ``async with open_ivy_bus(...)`` block,
        which then exits without an exception; the BYEs go out as the block
        unwinds. Called from anywhere (another task too), it takes effect at
        the body's next checkpoint.
        """
        self._body_scope.cancel()

    # ------------------------------------------------------------- lifecycle
    def _open(self) -> None:
        """Open the listener and the UDP socket (raises a plain ``OSError``)."""
        self.port = self._discovery.open()
        self.agent_id = new_agent_id(self.port)

    def _start(self, nursery: trio.Nursery) -> None:
        """Start the tasks and announce ourselves.

        Synchronous on purpose: the body of ``open_ivy_bus`` runs before any
        peer is accepted, so subscriptions it makes first are in every
        handshake (a checkpoint here would let a fast peer in before them).
        """
        self._nursery = nursery
        self._running = True
        if self._to_self is not None:
            self._to_self.start(self.agent_name, self.port, self.agent_id, nursery)
        nursery.start_soon(self._router.sweep)
        self._discovery.start(nursery, self.agent_id, self.agent_name)
        logger.info("%s joined %s (TCP port %d)", self.agent_name, self.bus_address, self.port)

    async def _serve(self, sock: socket.socket, host: str, peer_id: str | None, port: int) -> bool:
        """Run one new connection (discovery calls it) until it ends; whether it got ready."""
        log, pace = self._source_logs.for_connection(host), self._router.pace
        session = open_session(sock, host, self.options, self._dispatcher, peer_id, port, log, pace)
        if session is None or not self._running or not self._peers.add(session):
            sock.close()  # gone at once, we are leaving, ourselves, or one too many
            return False
        session.send_handshake(self.port, self.agent_name, self._local.handshake_lines())
        await session.run()
        return session.ready

    def _say_bye(self) -> None:
        """Stop: end the channels, queue BYE to every peer (the sessions send it)."""
        self._running = False
        self._local.end_all()
        self._hub.end_all()
        for session in self._peers:
            session.say_bye()
        self._peers.close()

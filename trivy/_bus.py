"""The Ivy bus agent: :func:`open_ivy_bus` and :class:`IvyBus`.

A nursery owns everything the agent runs: the TCP listener task, the UDP
discovery task, one task per peer connection (with its writer task), and the
timers. Leaving the ``async with`` block, :meth:`IvyBus.stop` or an accepted
DIE sends BYE to every peer and cancels them all. The protocol decisions are
made by the sans-IO :class:`~trivy._connection.Connection`; this module only
moves bytes and calls the application.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any, Literal, TypeVar, cast

import trio

from . import protocol
from ._channels import BufferedReceiveChannel, EventStream, Subscription
from ._connection import (
    Bye,
    Closing,
    Connection,
    DieRequested,
    DirectReceived,
    HandshakeDone,
    Malformed,
    MsgTuple,
    PeerIdentified,
    PingReceived,
    PongReceived,
    RegexpAdded,
    RegexpRemoved,
    UnknownType,
    duplicate_loser,
)
from ._connection import (
    ErrorReceived as _ErrorLine,
)
from ._discovery import Discovery, new_agent_id
from ._errors import IvyIllegalStateError
from ._events import (
    BusEvent,
    Congestion,
    DieReceived,
    DirectMessage,
    ErrorReceived,
    Match,
    Peer,
    PeerConnected,
    PeerDisconnected,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)
from ._link import Link
from ._matching import MatchMode, RegexpTable
from ._timers import Timer, TimerCallback
from .protocol import MsgType

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["IvyBus", "open_ivy_bus"]

logger = logging.getLogger("trivy")

T = TypeVar("T")
OverflowPolicy = Literal["drop", "disconnect"]
MessageCallback = Callable[..., "Awaitable[object] | object"]
DieCallback = Callable[[Peer, int], "Awaitable[bool | None] | bool | None"]

#: Bytes queued for one peer before ``await send()`` waits for it to drain
#: (and ``send_nowait`` applies the overflow policy). Large enough to absorb
#: bursts of tens of thousands of typical messages, small enough that a
#: stalled peer cannot make us hold unbounded memory.
DEFAULT_SEND_BUFFER_LIMIT = 4 * 1024 * 1024
#: Default capacity of a subscription's buffer, in messages.
DEFAULT_MAX_BUFFER = 1000
#: ``await send()`` yields to the scheduler once per this many calls (or
#: when a peer's buffer is over its limit): yielding on every call would
#: flush one message per write and forfeit coalescing. 1024 sends take about
#: 1 ms, within trio's advice to checkpoint every few milliseconds; 256 cost
#: about 7 % of the 1→1 throughput in scheduler passes.
SENDS_PER_CHECKPOINT = 1024
#: A message to an idle peer is written at once, without the writer task,
#: unless the last such write to it is more recent than this (seconds): then
#: messages come in a burst and are better coalesced by the writer.
DIRECT_WRITE_INTERVAL = 50e-6
#: On stop, what is queued for the peers (then BYE) keeps leaving as long as
#: it makes progress; a peer that takes no byte for this many seconds is
#: given up on.
STOP_TIMEOUT = 2.0
#: Bytes asked of the kernel per read.
RECEIVE_SIZE = 256 * 1024
#: Reads served without waiting before the reader yields anyway.
READS_PER_CHECKPOINT = 16

_BYE = protocol.encode(MsgType.BYE, 0)
#: b"2 <id>\x02" by subscription id: the head of every MSG we send.
_MSG_HEADS: dict[int, bytes] = {}
#: ...for that many ids at most: peers choose them, the cache must not grow
#: without bound.
_MAX_MSG_HEADS = 4096
_ALREADY_CONNECTED = protocol.encode(MsgType.ERROR, 0, "Application already connected")
#: ivy-c answers a malformed line with ERROR id 3.
_BAD_FORMAT_ID = 3


class _Binding:
    """A subscription delivered to a callback rather than a channel."""

    __slots__ = ("callback", "is_async", "regexp")

    def __init__(self, callback: MessageCallback, regexp: str) -> None:
        self.callback = callback
        self.regexp = regexp
        self.is_async = inspect.iscoroutinefunction(callback)


class IvyBus:
    """An agent on an Ivy bus. Made by :func:`open_ivy_bus`; see it for options.

    Attributes:
      agent_name: our name on the bus.
      agent_id: our bus-unique id (sent in the UDP announce).
      port: our TCP listening port.
      bus_address: the networks and UDP port we announce on.
    """

    def __init__(
        self,
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
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if not agent_name or "\n" in agent_name:
            raise ValueError(f"an agent name must be non-empty, without newline: {agent_name!r}")
        if ready_message is not None and "\n" in ready_message:
            raise ValueError(f"the ready message cannot contain a newline: {ready_message!r}")
        if overflow not in ("drop", "disconnect"):
            raise ValueError(f"overflow must be 'drop' or 'disconnect', not {overflow!r}")
        if not 0 <= multicast_ttl <= 255:
            raise ValueError(f"multicast_ttl must be within 0..255, not {multicast_ttl}")
        self.agent_name = agent_name
        self.bus_address = protocol.parse_bus(bus)
        for network in self.bus_address.networks:
            if ":" in network:
                raise ValueError(f"IPv6 buses are not supported yet: {network!r}")
        self.agent_id = ""
        self.port = 0
        self.ready_message = ready_message
        self.on_die = on_die
        self.host = host
        self.multicast_ttl = multicast_ttl
        self.multicast_interface = multicast_interface
        self.send_buffer_limit = send_buffer_limit
        self.overflow: OverflowPolicy = overflow
        self.java_newlines = java_newlines
        self.stop_timeout = stop_timeout
        self._table: RegexpTable[Link] = RegexpTable(match_mode)
        self._links: dict[Link, None] = {}
        self._link_of_peer: dict[Peer, Link] = {}
        self._local: dict[int, Subscription | _Binding] = {}
        self._sub_ids = itertools.count()
        self._event_streams: list[EventStream[BusEvent]] = []
        self._direct_streams: list[EventStream[DirectMessage]] = []
        self._peers_changed = trio.lowlevel.ParkingLot()
        self._body_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._discovery = Discovery(
            self.bus_address,
            host=host,
            multicast_ttl=multicast_ttl,
            multicast_interface=multicast_interface,
            serve=self._serve_connection,
            is_connected=self._is_connected,
        )
        self._started = False
        self._stopping = False
        self._running = False  # started and not stopping: read on every send
        self._congested: list[Link] = []  # peers over their limit, for send()
        self._sends_since_checkpoint = 0

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
        return self._table.mode

    @property
    def peers(self) -> list[Peer]:
        """The peers whose handshake is complete, in connection order."""
        return [link.peer for link in self._links if link.ready]

    @property
    def subscriptions(self) -> dict[int, str]:
        """Our own subscriptions: id → regexp (as sent to peers)."""
        return {sub_id: local.regexp for sub_id, local in self._local.items()}

    def peer(self, name: str) -> Peer | None:
        """The first ready peer named ``name``, or None."""
        return next((p for p in self.peers if p.name == name), None)

    def peers_named(self, name: str) -> list[Peer]:
        """Every ready peer named ``name`` (Ivy names need not be unique)."""
        return [p for p in self.peers if p.name == name]

    async def wait_for_peer(self, name: str | None = None) -> Peer:
        """Wait until a peer named ``name`` (any peer if None) is ready.

        Bound the wait with ``trio.fail_after``. The peer is ready, but its
        own subscriptions may still be on their way: a text sent at once may
        reach none of them (wait for a :class:`~trivy.SubscriptionAdded`
        event, or for ``peer.subscriptions``, when that matters).

        Raises:
          IvyIllegalStateError: the bus is not running (or stops meanwhile).
        """
        while True:
            self._check_running()
            found = self.peers[0] if name is None and self.peers else None
            found = found or (self.peer(name) if name is not None else None)
            if found is not None:
                await trio.lowlevel.checkpoint()
                return found
            await self._peers_changed.park()

    # ------------------------------------------------------- our subscriptions
    def _new_regexp(self, regexp: str) -> str:
        self._check_running()
        if "\n" in regexp:
            raise ValueError(f"a regexp cannot contain a newline: {regexp!r}")
        wire_regexp = protocol.expand_intervals(regexp)
        try:
            re.compile(wire_regexp)
        except re.error as exc:
            raise ValueError(f"bad regexp {regexp!r}: {exc}") from None
        return wire_regexp

    def subscribe(self, regexp: str, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> Subscription:
        """Subscribe to the texts matching ``regexp``; get them as a channel.

        ADD_REGEXP goes to every peer now; closing the subscription (leaving
        its ``async with`` block) sends DEL_REGEXP. While ``max_buffer``
        matches wait unread, reading from the sending peer pauses.

        Raises:
          ValueError: the regexp does not compile or contains a newline.
        """
        wire_regexp = self._new_regexp(regexp)
        sub_id = next(self._sub_ids)
        sub = Subscription(sub_id, wire_regexp, max_buffer, lambda: self._unsubscribe(sub_id))
        self._local[sub_id] = sub
        self._broadcast(protocol.encode(MsgType.ADD_REGEXP, sub_id, wire_regexp))
        return sub

    def bind(self, callback: MessageCallback, regexp: str) -> int:
        """Call ``callback(peer, *groups)`` for each text matching ``regexp``.

        The callback may be sync or async; it runs in the task reading the
        sending peer, so a slow one slows that peer only. An exception in it
        is logged and never stops the bus.

        Returns:
          the subscription id, for :meth:`unbind`.
        """
        wire_regexp = self._new_regexp(regexp)
        sub_id = next(self._sub_ids)
        self._local[sub_id] = _Binding(callback, wire_regexp)
        self._broadcast(protocol.encode(MsgType.ADD_REGEXP, sub_id, wire_regexp))
        return sub_id

    def unbind(self, sub_id: int) -> str:
        """Remove a subscription (bound or channel); returns its regexp.

        Raises:
          KeyError: no subscription has that id.
        """
        local = self._local.get(sub_id)
        if local is None:
            raise KeyError(f"no subscription with id {sub_id}")
        if isinstance(local, Subscription):
            local.close()  # calls back into _unsubscribe
        else:
            self._unsubscribe(sub_id)
        return local.regexp

    def change_subscription(self, sub_id: int, regexp: str) -> None:
        """Replace the regexp of a subscription, keeping its id (ivy-c IvyChangeMsg).

        Raises:
          KeyError: no subscription has that id.
          ValueError: the regexp does not compile or contains a newline.
        """
        local = self._local.get(sub_id)
        if local is None:
            raise KeyError(f"no subscription with id {sub_id}")
        local.regexp = self._new_regexp(regexp)
        self._broadcast(protocol.encode(MsgType.ADD_REGEXP, sub_id, local.regexp))

    def _unsubscribe(self, sub_id: int) -> None:
        if self._local.pop(sub_id, None) is not None and not self._stopping:
            self._broadcast(protocol.encode(MsgType.DEL_REGEXP, sub_id))

    def events(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> EventStream[BusEvent]:
        """A channel of every bus event from now on, until it is closed."""
        stream: EventStream[BusEvent] = EventStream(
            max_buffer, lambda: self._event_streams.remove(stream)
        )
        self._event_streams.append(stream)
        return stream

    def direct_messages(
        self, *, max_buffer: int = DEFAULT_MAX_BUFFER
    ) -> EventStream[DirectMessage]:
        """A channel of the direct messages we receive from now on."""
        stream: EventStream[DirectMessage] = EventStream(
            max_buffer, lambda: self._direct_streams.remove(stream)
        )
        self._direct_streams.append(stream)
        return stream

    # --------------------------------------------------------------- sending
    def _check_running(self) -> None:
        if not self.running:
            raise IvyIllegalStateError(f"{self!r} is not running")

    def _broadcast(self, data: bytes) -> None:
        for link in self._links:
            link.write(data)

    def _route(self, text: str, only: Link | None, wait: bool) -> int:
        """Send ``text`` as MSGs to every matching subscription; count them.

        With ``wait``, over-limit peers are written to anyway and collected in
        ``self._congested`` (the caller waits for them); otherwise the
        overflow policy applies to them.
        """
        if "\n" in text:
            if not self.java_newlines:
                raise ValueError(f"an Ivy message cannot contain a newline: {text!r}")
            text = text.replace("\n", protocol.JAVA_NEWLINE_ESCAPE)
        if not text:
            return 0  # ivy-c sends nothing for an empty text
        count = 0
        limit = self.send_buffer_limit
        heads = _MSG_HEADS
        for entry in self._table.candidates(text):
            found = entry.find(text)
            if found is None:
                continue
            groups = found.groups("")  # a group that took no part: ""
            payload = ("\x03".join(groups) + "\x03\n" if groups else "\n").encode(
                "utf-8", "surrogateescape"
            )
            for link, sub_id in entry.subscribers:
                if only is not None and link is not only:
                    continue
                out = link.out
                if len(out) > limit:
                    if not wait:
                        self._overflow(link, len(payload) + 8)
                        continue
                    if link not in self._congested:
                        self._congested.append(link)
                head = heads.get(sub_id)
                if head is None:
                    head = b"2 %d\x02" % sub_id
                    if len(heads) < _MAX_MSG_HEADS:
                        heads[sub_id] = head
                count += 1
                if link.writer_idle and not out:
                    now = perf_counter()
                    if now - link.last_direct_write > DIRECT_WRITE_INTERVAL:
                        link.send_now(head + payload, now)  # a lone message
                        continue
                out += head
                out += payload
                if link.writer_idle:
                    link.wake_writer()
        return count

    def _overflow(self, link: Link, size: int) -> None:
        link.dropped_bytes += size
        if link.congested:
            return  # reported once per episode: until its buffer empties
        link.congested = True
        if self.overflow == "disconnect":
            logger.warning("%s: output buffer full, disconnecting", link.peer)
            link.abort()
        else:
            logger.warning("%s: output buffer full, dropping messages", link.peer)
        self._emit_nowait(Congestion(link.peer, len(link.out), link.dropped_bytes))

    async def send(self, text: str, *, to: Peer | None = None) -> int:
        """Send a text to every peer subscription it matches (``to``: one peer's only).

        Waits while a target peer's output buffer is over its limit
        (lossless backpressure). It is a checkpoint only then and once every
        ``SENDS_PER_CHECKPOINT`` (1024) calls, not on every call: that is
        what lets many sends leave in one write. A loop of sends is still
        cancellable within about a millisecond.

        Returns:
          the number of MSGs sent (0: nobody was interested).

        Raises:
          ValueError: the text contains a newline.
          IvyIllegalStateError: the bus is not running, or ``to`` is not connected.
        """
        if not self._running:
            self._check_running()
        count = self._route(text, None if to is None else self._link(to), True)
        if self._congested:
            self._sends_since_checkpoint = 0
            congested, self._congested = self._congested, []
            for link in congested:
                link.drained_below = self.send_buffer_limit
                while len(link.out) > self.send_buffer_limit and not link.closing:
                    await link.drained.park()
            await trio.lowlevel.checkpoint()
        else:
            self._sends_since_checkpoint += 1
            if self._sends_since_checkpoint >= SENDS_PER_CHECKPOINT:
                self._sends_since_checkpoint = 0
                await trio.lowlevel.checkpoint()
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
        return self._route(text, None if to is None else self._link(to), False)

    def _link(self, peer: Peer) -> Link:
        self._check_running()
        link = self._link_of_peer.get(peer)
        if link is None or link.closing:
            raise IvyIllegalStateError(f"{peer} is not connected")
        return link

    def send_direct(self, peer: Peer, num_id: int, text: str) -> None:
        """Send a DIRECT_MSG to one peer.

        Raises:
          ValueError: the text contains a newline (and ``java_newlines`` is off).
          IvyIllegalStateError: the peer is not connected.
        """
        text = self._outgoing_text(text)
        self._link(peer).write(protocol.encode(MsgType.DIRECT_MSG, num_id, text))

    def send_raw(
        self, peer: Peer, msg_type: MsgType | int, num_id: int, params: str | Sequence[str] = ""
    ) -> None:
        """Send one protocol message to one peer, as it is.

        The escape hatch for what the other methods do not cover (a MSG for
        a given subscription id, a DIE with a text...), as ivy-python's
        ``IvyClient`` allows. ``params`` as in :func:`trivy.protocol.encode`.

        Raises:
          ValueError: a parameter contains a newline.
          IvyIllegalStateError: the peer is not connected.
        """
        self._link(peer).write(protocol.encode(msg_type, num_id, params))

    def send_error(self, peer: Peer, num_id: int, text: str) -> None:
        """Send an ERROR to one peer.

        Raises:
          ValueError: the text contains a newline.
          IvyIllegalStateError: the peer is not connected.
        """
        self._link(peer).write(protocol.encode(MsgType.ERROR, num_id, text))

    def send_die(self, peer: Peer, num_id: int = 0) -> None:
        """Ask one peer to terminate (DIE).

        Raises:
          IvyIllegalStateError: the peer is not connected.
        """
        self._link(peer).write(protocol.encode(MsgType.DIE, num_id))

    def _outgoing_text(self, text: str) -> str:
        if self.java_newlines:
            return text.replace("\n", protocol.JAVA_NEWLINE_ESCAPE)
        return text

    async def ping(self, peer: Peer) -> float:
        """PING a peer and wait for its PONG (bound it with ``trio.fail_after``).

        Returns:
          the round trip, in seconds.

        Raises:
          IvyIllegalStateError: the peer is not (or no longer) connected.
        """
        link = self._link(peer)
        ping_id, pending = link.start_ping()
        link.write(protocol.encode(MsgType.PING, ping_id))
        try:
            await pending.answered.wait()
        finally:
            link.pings.pop(ping_id, None)
        if pending.round_trip is None:
            raise IvyIllegalStateError(f"{peer} left before answering the PING")
        return pending.round_trip

    def start_timer(self, fn: TimerCallback, interval: float, *, count: int = 0) -> Timer:
        """Call ``fn()`` (sync or async) every ``interval`` s, ``count`` times (0: forever).

        The timer is a task of the bus: it ends with it, or on
        :meth:`Timer.cancel`.
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

    # ------------------------------------------------------------ events out
    async def _emit(self, event: BusEvent) -> None:
        for stream in list(self._event_streams):  # one may close while we wait
            await stream._put(event)

    def _emit_nowait(self, event: BusEvent) -> None:
        # From places that cannot wait (a link's teardown, send_nowait): past
        # the stream's limit rather than lost; bounded by peers and sends.
        for stream in self._event_streams:
            stream._put_anyway(event)

    # ------------------------------------------------------------- lifecycle
    def _start(self, nursery: trio.Nursery) -> None:
        """Open the sockets, start the tasks, announce ourselves.

        Synchronous on purpose: the body of ``open_ivy_bus`` runs before any
        peer is accepted, so subscriptions it makes first are in every
        handshake (a checkpoint here would let a fast peer in before them).
        """
        self._nursery = nursery
        self.port = self._discovery.open()
        self.agent_id = new_agent_id(self.port)
        self._started = self._running = True
        self._discovery.start(nursery, self.agent_id, self.agent_name)
        logger.info("%s joined %s (TCP port %d)", self.agent_name, self.bus_address, self.port)

    async def _say_bye(self) -> None:
        """Stop: end the channels, BYE to every peer, wait (bounded) for it to leave."""
        self._stopping = True
        self._running = False
        for channel in [*self._local.values(), *self._event_streams, *self._direct_streams]:
            if isinstance(channel, BufferedReceiveChannel):
                channel._end()
        for link in self._links:
            link.close_after_flush(_BYE)
        await self._wait_flushed(list(self._links))
        self._peers_changed.unpark_all()

    async def _wait_flushed(self, links: list[Link]) -> None:
        """Wait until every link sent what it had, while they make progress.

        A slow but live peer gets all that ``send`` accepted for it; a peer
        that stopped reading is given up on after ``stop_timeout`` seconds
        without progress.
        """
        unsent = sum(len(link.out) for link in links)
        while True:
            with trio.move_on_after(self.stop_timeout):
                for link in links:
                    await link.flushed.wait()
                return
            now_unsent = sum(len(link.out) for link in links if not link.flushed.is_set())
            if now_unsent >= unsent:
                logger.warning("leaving with %d bytes unsent: peers stopped reading", now_unsent)
                return
            unsent = now_unsent

    def _close_sockets(self) -> None:
        self._discovery.close()

    # ---------------------------------------------------------------- peers
    def _is_connected(self, host: str, port: int) -> bool:
        return any(link.peer.host == host and link.peer.port == port for link in self._links)

    async def _serve_connection(
        self, sock: socket.socket, host: str, agent_id: str | None, port: int
    ) -> None:
        link = self._new_link(sock, host, agent_id, port)
        if link is None:
            return
        try:
            await self._serve_link(link)
        except Exception:
            # One peer's connection must never take the bus down with it.
            logger.exception("%s: unexpected error, connection dropped", link.peer)

    def _new_link(
        self, sock: socket.socket, host: str, agent_id: str | None = None, port: int = 0
    ) -> Link | None:
        if self._stopping:
            sock.close()
            return None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(sock, host, Connection(java_newlines=self.java_newlines), agent_id, port)
        except OSError as exc:  # the peer is already gone
            logger.info("connection with %s lost at once: %s", host, exc)
            sock.close()
            return None
        self._links[link] = None
        self._link_of_peer[link.peer] = link
        subscriptions = [(sub_id, local.regexp) for sub_id, local in self._local.items()]
        link.write(Connection.handshake(self.port, self.agent_name, subscriptions))
        return link

    async def _serve_link(self, link: Link) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run_writer)
                with link.reader_scope:
                    await self._read(link)
                link.close_after_flush()
                await self._wait_flushed([link])
                nursery.cancel_scope.cancel()
        finally:
            self._drop_link(link)

    def _drop_link(self, link: Link) -> None:
        self._links.pop(link, None)
        self._link_of_peer.pop(link.peer, None)
        for sub_id, regexp in link.conn.subscriptions.items():
            self._table.remove(link, sub_id, regexp)
        link.fail_pings()
        link.sock.close()
        if link.ready:
            link.ready = False
            logger.info("%s disconnected", link.peer)
            self._peers_changed.unpark_all()
            self._emit_nowait(PeerDisconnected(link.peer))

    async def _read(self, link: Link) -> None:
        sock, receive_data, peer = link.sock, link.conn.receive_data, link.peer
        local = self._local
        reads = 0
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                reads = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                logger.info("%s: connection lost: %s", link.peer, exc)
                return
            for event in receive_data(data):
                if type(event) is tuple:  # a MSG: (sub_id, groups)
                    sub_id, groups = cast("MsgTuple", event)
                    target = local.get(sub_id)
                    if target is None:
                        continue  # unsubscribed meanwhile
                    # (isinstance on a plain class: Subscription's ABC
                    # metaclass would make it a Python-level check)
                    if isinstance(target, _Binding):
                        if target.is_async:
                            await self._call_binding(target, peer, groups)
                            continue
                        try:  # inline: a sync callback costs no coroutine
                            target.callback(peer, *groups)
                        except Exception:
                            logger.exception("callback for %r raised", target.regexp)
                    else:
                        match = Match(peer, groups, sub_id)
                        if not target._put_nowait(match):
                            await target._put(match)
                elif not await self._handle(link, event):
                    return
            if not data:
                return
            if len(data) < RECEIVE_SIZE:
                # The kernel had no more: wait rather than try a read that
                # would fail (an exception and a syscall per wake-up).
                reads = 0
                await trio.lowlevel.wait_readable(sock)
                continue
            reads += 1
            if reads >= READS_PER_CHECKPOINT:
                reads = 0
                await trio.lowlevel.checkpoint()

    async def _call_binding(self, binding: _Binding, peer: Peer, groups: tuple[str, ...]) -> None:
        try:
            result = binding.callback(peer, *groups)
            if binding.is_async:
                await result  # type: ignore[misc]
        except Exception:
            logger.exception("callback %r for %r raised", binding.callback, binding.regexp)

    async def _handle(self, link: Link, event: Any) -> bool:
        """Act on one protocol event; False when the connection must end."""
        peer = link.peer
        kind = type(event)
        if kind is RegexpAdded:
            if event.replaced is not None:
                self._table.remove(link, event.sub_id, event.replaced)
            try:
                self._table.add(link, event.sub_id, event.regexp)
            except (re.error, OverflowError, RecursionError, ValueError) as exc:
                # not only re.error: "a{4294967296}" overflows, 500 nested
                # groups recurse too deep
                reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
                logger.warning(
                    "%s sent a regexp that does not compile: %r: %s",
                    peer,
                    event.regexp[:200],
                    reason,
                )
                text = f"Error compiling '{event.regexp}', {reason}"
                link.write(protocol.encode(MsgType.ERROR, getattr(exc, "pos", 0) or 0, text))
            if event.replaced is None:
                await self._emit(SubscriptionAdded(peer, event.sub_id, event.regexp))
            else:
                await self._emit(
                    SubscriptionChanged(peer, event.sub_id, event.regexp, event.replaced)
                )
        elif kind is RegexpRemoved:
            self._table.remove(link, event.sub_id, event.regexp)
            await self._emit(SubscriptionRemoved(peer, event.sub_id, event.regexp))
        elif kind is PeerIdentified:
            peer.name, peer.port = event.name, event.port
            return self._resolve_duplicate(link)
        elif kind is HandshakeDone:
            link.ready = True
            logger.info("%s connected", peer)
            self._peers_changed.unpark_all()
            if self.ready_message:
                self._route(self.ready_message, link, False)
            await self._emit(PeerConnected(peer))
        elif kind is PingReceived:
            link.write(protocol.encode(MsgType.PONG, event.num_id))
        elif kind is PongReceived:
            if not link.answer_ping(event.num_id):
                logger.info("%s sent a PONG for no PING of ours (id %d)", peer, event.num_id)
        elif kind is DirectReceived:
            message = DirectMessage(peer, event.num_id, event.text)
            for stream in list(self._direct_streams):
                await stream._put(message)
            await self._emit(message)
        elif kind is _ErrorLine:
            logger.warning("%s sent an error (id %d): %s", peer, event.num_id, event.text)
            await self._emit(ErrorReceived(peer, event.num_id, event.text))
        elif kind is DieRequested:
            await self._die(peer, event.num_id)
        elif kind is Malformed:
            logger.warning("%s sent a malformed line (%s): %r", peer, event.reply, event.line[:200])
            link.write(protocol.encode(MsgType.ERROR, _BAD_FORMAT_ID, event.reply))
        elif kind is UnknownType:
            logger.warning(
                "%s sent a message of unknown type %d: %r", peer, event.msg_type, event.params[:200]
            )
        elif kind is Bye:
            logger.info("%s said BYE", peer)
            return False
        elif kind is Closing:
            logger.warning("dropping %s: %s", peer, event.reason)
            link.write(protocol.encode(MsgType.ERROR, 0, event.reason))
            return False
        return True

    def _resolve_duplicate(self, link: Link) -> bool:
        """Two connections to one agent: close the one ivy-c would close."""
        for other in self._links:
            if (
                other is not link
                and other.identified
                and not other.closing
                and other.peer.host == link.peer.host
                and other.peer.port == link.peer.port
            ):
                mine = duplicate_loser(link.local_port, link.remote_port)
                theirs = duplicate_loser(other.local_port, other.remote_port)
                loser = link if mine > theirs else other
                logger.info("%s: duplicate connection, closing one", link.peer)
                loser.abort(_ALREADY_CONNECTED)
                return loser is not link
        return True

    async def _die(self, peer: Peer, num_id: int) -> None:
        refused = False
        if self.on_die is not None:
            try:
                answer = self.on_die(peer, num_id)
                if inspect.isawaitable(answer):
                    answer = await answer
                refused = answer is False
            except Exception:
                logger.exception("on_die callback raised; dying anyway")
        await self._emit(DieReceived(peer, num_id, refused))
        if refused:
            logger.info("%s asked us to die: refused", peer)
        else:
            logger.info("%s asked us to die: stopping", peer)
            self.stop()


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
    stop_timeout: float = STOP_TIMEOUT,
) -> AsyncIterator[IvyBus]:
    """Join an Ivy bus for the duration of an ``async with`` block.

    Args:
      agent_name: our name on the bus.
      bus: ``"NETWORKS:PORT"``; None → ``$IVYBUS`` → ``"127:2010"``.
      ready_message: a text sent to each peer (through its subscriptions
        only) when its handshake completes.
      on_die: ``on_die(peer, num_id)``, sync or async, called on DIE;
        returning False refuses to die. By default the bus stops.
      host: the address the TCP listener binds to.
      multicast_ttl: TTL of multicast announces (0 keeps them on this host).
      multicast_interface: IPv4 address of the interface for multicast
        (default: the system's choice).
      match_mode: how peers' regexps are applied to our texts: ``"search"``
        (anywhere, like ivy-c; the default), ``"match"`` (at the start,
        like ivy-python) or ``"fullmatch"`` (whole text, like ivy-java).
      send_buffer_limit: bytes queued per peer before ``send`` waits.
      overflow: what ``send_nowait`` does for a peer over the limit:
        ``"drop"`` its message, or ``"disconnect"`` it.
      java_newlines: carry ``\\n`` inside texts as ivy-java's ``\\x1a``.
      stop_timeout: on leaving, what is queued for a peer keeps being sent
        as long as the peer takes some of it within this many seconds.

    Raises:
      ValueError: a bad bus string, agent name or option.
      OSError: the listener or the UDP port could not be opened.
    """
    ivy = IvyBus(
        agent_name,
        bus,
        ready_message=ready_message,
        on_die=on_die,
        host=host,
        multicast_ttl=multicast_ttl,
        multicast_interface=multicast_interface,
        match_mode=match_mode,
        send_buffer_limit=send_buffer_limit,
        overflow=overflow,
        java_newlines=java_newlines,
        stop_timeout=stop_timeout,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            ivy._start(nursery)
            try:
                with ivy._body_scope:
                    yield ivy
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await ivy._say_bye()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Our tasks never raise: a group is the body's exception, wrapped.
        if body_error is not None and group.exceptions == (body_error,):
            raise body_error from None
        raise
    finally:
        ivy._close_sockets()

"""How an agent is configured: one frozen options object, validated once.

:func:`trivy.open_ivy_bus`, :class:`trivy.IvyBus`, the ``trivy`` command and
:mod:`trivy.compat` all build a :class:`BusOptions`; a bad value is refused
here, with a message naming it, before any socket is opened. Defaults that
bound what a peer can cost us live here too, each with the reason for its
number.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from typing import Literal, TypedDict

import attrs

from . import protocol
from ._connection import MAX_NAME_LENGTH, Connection
from ._logs import LogLimiter
from ._matching import MAX_TABLE_CHARACTERS, MatchMode
from ._memory_shares import DEFAULT_MAX_BUFFERED_BYTES
from ._option_checks import (
    check_mode,
    check_overflow,
    check_ttl,
    classes,
    networks,
    not_negative,
    one_line,
    positive,
)
from ._peer_regexps import (
    MAX_PEER_REGEXP_BYTES,
    MAX_PEER_SUBSCRIPTIONS,
    MAX_REGEXP_LENGTH,
    MAX_SUBSCRIPTIONS,
    PeerRegexps,
)
from .protocol import BusAddress

__all__ = [
    "ANY_HOST",
    "DEFAULT_DEAD_HOST_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LEAVE_TIMEOUT",
    "DEFAULT_SEND_BUFFER_LIMIT",
    "DEFAULT_STALL_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_UNRESPONSIVE_TIMEOUT",
    "LOOPBACK_HOST",
    "MAX_PEERS",
    "OPTION_NAMES",
    "BusOptions",
    "BusOptionsArgs",
    "OverflowPolicy",
    "resolve_bus",
]

#: An application's predicate that keeps failing is logged boundedly.
_log = LogLimiter(logging.getLogger("trivy"))

OverflowPolicy = Literal["drop", "disconnect"]

#: Bytes queued for one peer before ``await send()`` waits for it to drain
#: (and ``send_nowait`` applies the overflow policy). Large enough to absorb
#: bursts of tens of thousands of typical messages, small enough that a
#: stalled peer cannot make us hold unbounded memory.
DEFAULT_SEND_BUFFER_LIMIT = 4 * 1024 * 1024
#: Seconds a new connection has to complete its handshake (START_REGEXP to
#: END_REGEXP) before it is closed. Real peers take milliseconds; a
#: connection that never speaks must not hold a socket and two tasks.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: On leaving, what is queued for the peers (then BYE) keeps leaving as long
#: as it makes progress; a peer that takes no byte for this many seconds is
#: given up on. Two seconds covers a busy peer's scheduling hiccups without
#: making a stuck one hold up the exit for long.
DEFAULT_STOP_TIMEOUT = 2.0
#: Longest time leaving may take, whatever the peers do: one that trickles
#: a byte every ``stop_timeout`` would otherwise hold the exit open for ever.
DEFAULT_LEAVE_TIMEOUT = 10.0
#: Seconds a peer over its buffer limit may take no byte before it is
#: disconnected: long enough for a busy peer's pause (a garbage collection,
#: a slow callback), short enough that a peer that stopped reading holds
#: every waiting ``send`` for only this long.
DEFAULT_STALL_TIMEOUT = 5.0
#: A peer we heard nothing from for this many seconds is sent a PING (every
#: Ivy implementation answers one): an idle connection then carries data the
#: kernel must get acknowledged, so a vanished host is noticed.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: Seconds of silence (no byte, no PONG) after which a peer is reported
#: unresponsive: a frozen process still has its kernel acknowledge, so only
#: the missing PONGs tell. Several heartbeats long, so a peer busy for a few
#: seconds is never reported.
DEFAULT_UNRESPONSIVE_TIMEOUT = 30.0
#: Peers connected at once: an Ivy bus has tens of agents; each peer holds
#: a socket, three tasks and its subscriptions.
MAX_PEERS = 1000
#: Where an agent listens by default: on loopback alone when its bus's
#: networks are all loopback, on every interface otherwise (see ``BusOptions.host``).
LOOPBACK_HOST = "127.0.0.1"
ANY_HOST = "0.0.0.0"
#: Seconds a peer's host may acknowledge nothing we sent (data or keepalive
#: probes) before the kernel ends the connection (``TCP_USER_TIMEOUT``):
#: without it a vanished host is noticed after about 15 minutes.
DEFAULT_DEAD_HOST_TIMEOUT = 30.0


def resolve_bus(bus: str | BusAddress | None) -> BusAddress:
    """A bus string (or None: ``$IVYBUS``, then ``127:2010``) as a :class:`BusAddress`.

    Raises:
      ValueError: a malformed bus string, an empty one (only None means the
        default), or an IPv6 one (not supported yet).
    """
    if isinstance(bus, BusAddress):
        address = bus
    elif isinstance(bus, str) and not bus.strip():
        raise ValueError("an empty bus string: give NETWORKS:PORT (as 127:2010)")
    else:
        address = protocol.parse_bus(bus or os.environ.get(protocol.IVYBUS_ENV))
    for network in address.networks:
        if ":" in network:
            raise ValueError(f"IPv6 buses are not supported yet: {network!r}")
    return address


def _default_host(options: BusOptions) -> str:
    """Loopback for a bus of loopback networks, every interface otherwise."""
    return LOOPBACK_HOST if all(map(is_loopback, options.bus.networks)) else ANY_HOST


@functools.lru_cache(maxsize=1024)  # (asked of every connection and announce)
def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (a name is not looked up: False)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen(kw_only=True)
class BusOptions:
    """Everything that configures an agent, checked once when it is made.

    Attributes:
      agent_name: our name on the bus (non-empty, one line).
      bus: where we announce ourselves; a string (``"NETWORKS:PORT"``) or
        None is resolved at once: None → ``$IVYBUS`` → ``"127:2010"``.
      ready_message: a text sent to each peer (through its subscriptions
        only) when its handshake completes.
      host: the address the TCP listener binds to. By default, the
        loopback address when the bus's networks are all loopback (such as
        ``127:2010``, the default bus: such a bus can only ever be found on
        this machine), every interface (``"0.0.0.0"``) otherwise. Give
        ``"0.0.0.0"`` to be reachable from elsewhere on a loopback bus
        (by a peer told our port by other means).
      multicast_ttl: TTL of multicast announces (0 keeps them on this host).
      multicast_interface: IPv4 address of the interface for multicast
        (None: the system's choice).
      match_mode: how peers' regexps are applied to our texts: ``"search"``
        (anywhere, like ivy-c), ``"match"`` (at the start, like ivy-python)
        or ``"fullmatch"`` (whole text, like ivy-java).
      send_buffer_limit: bytes queued per peer before ``send`` waits (0:
        every ``send`` waits until its MSGs are out).
      overflow: what ``send_nowait`` does for a peer over the limit:
        ``"drop"`` its message, or ``"disconnect"`` it.
      java_newlines: carry ``\\n`` inside texts as ivy-java's ``\\x1a``.
      send_to_self: our own texts also reach our own matching subscriptions
        (ivy-java's ``sendToSelf``), in the order we send them; their
        :class:`~trivy.Match` names us as the peer (our name, port, id).
        ``send`` waits for our own full subscriptions as for a slow peer,
        and for the texts other tasks sent before it; nothing is dropped.
      message_classes: the first words of the texts we send (ivy-c's
        message filter): peers' regexps that cannot match any of them are
        not used (see ``bus.message_classes``). Empty: all are used.
      stop_timeout: on leaving, what is queued for a peer keeps being sent
        as long as the peer takes some of it within this many seconds (0:
        leave without waiting).
      leave_timeout: leaving never takes longer than this, whatever the
        peers do; what they have not taken by then is dropped (and logged).
      handshake_timeout: seconds a new connection has to complete its
        handshake before it is closed.
      stall_timeout: seconds a peer over ``send_buffer_limit`` may take no
        byte before it is disconnected, freeing the ``send`` calls waiting
        for it; also the seconds those calls may wait for one peer in all,
        lately, whatever trickle it reads (0.1 s forgiven per second in
        which nobody waits), and for all the peers together (then they
        wait for none until it is forgiven: a peer they would wait for gets
        ``overflow`` until it takes all it has). ``math.inf``: wait for ever.
      heartbeat_interval: a peer silent for this long is sent a PING
        (``math.inf``: never).
      unresponsive_timeout: a peer silent (no byte, no PONG) for this long
        is reported with a :class:`~trivy.PeerUnresponsive` event (a
        :class:`~trivy.PeerResponsive` one when it speaks again).
      drop_unresponsive: disconnect an unresponsive peer instead of only
        reporting it.
      dead_host_timeout: a peer whose host acknowledges nothing for this
        long is disconnected by the kernel (TCP keepalive and
        ``TCP_USER_TIMEOUT``, where the system has them; ``math.inf``: the
        system's defaults, about 15 minutes).
      allowed_networks: the networks peers may be in (``"10.1.0.0/16"``, or
        several, in a list or a comma-separated string); announces from
        elsewhere are ignored and connections from elsewhere closed at once,
        each source logged once. Empty (the default): any. Loopback is
        always allowed.
      refuse_peer: ``refuse_peer(host, port)`` True for an agent (the
        address it listens on) that this one must not connect with: its
        announces are ignored, and a connection from it ends, with a BYE,
        once its hello names its port. For a process that runs several
        agents which need no connection among them (the MQTT bridge's
        proxies). A predicate that raises refuses nothing (logged).
      max_regexp_length, max_peer_subscriptions, max_peer_regexp_bytes:
        what one peer may subscribe with: the longest regexp (16 Ki
        characters), how many at once (10,000), how many characters in all
        (1 Mi). A regexp over a limit gets an ERROR, and is not used.
      max_name_length: the longest agent name a peer may give (1 Ki
        characters; longer: ERROR, and its connection closes).
      max_peers: connections at once (1,000); one more is closed at once,
        unless the host holding the most holds over a sixteenth of them and
        two more than its host (then that host's newest is closed for it).
      max_buffered_bytes: bytes held for all the peers at once, queued for
        them and their unfinished lines (256 Mi). Each peer's limits are
        its share of it when smaller than its own (half the bound over the
        peers for each way, a power of two, 64 Ki at least: 16 peers keep
        a 4 Mi queue), and a peer that joins finds the largest holders
        closed if the total is over.
      max_regexp_characters: characters of the regexps of all the peers
        together (16 Mi, each distinct regexp counted once); past it, a
        new regexp gets an ERROR.
      max_subscriptions: subscriptions of all the peers together (50,000);
        past it, a new one gets an ERROR unless its peer holds 100 or fewer
        (so the table holds at most this plus 100 a peer).

    Raises:
      ValueError: a bad value; the message names it.
    """

    agent_name: str = attrs.field(validator=one_line("an agent name", allow_empty=False))
    bus: BusAddress = attrs.field(default=None, converter=resolve_bus)  # str | None accepted
    ready_message: str | None = attrs.field(
        default=None, validator=one_line("the ready message", allow_empty=True)
    )
    host: str = attrs.field(default=attrs.Factory(_default_host, takes_self=True))
    multicast_ttl: int = attrs.field(default=64, validator=check_ttl)
    multicast_interface: str | None = None
    match_mode: MatchMode = attrs.field(default="search", validator=check_mode)
    send_buffer_limit: int = attrs.field(
        default=DEFAULT_SEND_BUFFER_LIMIT, validator=not_negative("send_buffer_limit")
    )
    overflow: OverflowPolicy = attrs.field(default="drop", validator=check_overflow)
    java_newlines: bool = False
    send_to_self: bool = False
    message_classes: tuple[str, ...] = attrs.field(default=(), converter=classes)
    stop_timeout: float = attrs.field(
        default=DEFAULT_STOP_TIMEOUT, validator=not_negative("stop_timeout")
    )
    leave_timeout: float = attrs.field(
        default=DEFAULT_LEAVE_TIMEOUT, validator=not_negative("leave_timeout")
    )
    handshake_timeout: float = attrs.field(
        default=DEFAULT_HANDSHAKE_TIMEOUT, validator=not_negative("handshake_timeout")
    )
    stall_timeout: float = attrs.field(
        default=DEFAULT_STALL_TIMEOUT, validator=positive("stall_timeout")
    )
    heartbeat_interval: float = attrs.field(
        default=DEFAULT_HEARTBEAT_INTERVAL, validator=positive("heartbeat_interval")
    )
    unresponsive_timeout: float = attrs.field(
        default=DEFAULT_UNRESPONSIVE_TIMEOUT, validator=positive("unresponsive_timeout")
    )
    drop_unresponsive: bool = False
    dead_host_timeout: float = attrs.field(
        default=DEFAULT_DEAD_HOST_TIMEOUT, validator=positive("dead_host_timeout")
    )
    allowed_networks: tuple[ipaddress.IPv4Network, ...] = attrs.field(
        default=(), converter=networks
    )
    refuse_peer: Callable[[str, int], bool] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.is_callable())
    )
    max_regexp_length: int = attrs.field(
        default=MAX_REGEXP_LENGTH, validator=not_negative("max_regexp_length")
    )
    max_peer_subscriptions: int = attrs.field(
        default=MAX_PEER_SUBSCRIPTIONS, validator=not_negative("max_peer_subscriptions")
    )
    max_peer_regexp_bytes: int = attrs.field(
        default=MAX_PEER_REGEXP_BYTES, validator=not_negative("max_peer_regexp_bytes")
    )
    max_name_length: int = attrs.field(
        default=MAX_NAME_LENGTH, validator=positive("max_name_length")
    )
    max_peers: int = attrs.field(default=MAX_PEERS, validator=positive("max_peers"))
    max_buffered_bytes: int = attrs.field(
        default=DEFAULT_MAX_BUFFERED_BYTES, validator=positive("max_buffered_bytes")
    )
    max_regexp_characters: int = attrs.field(
        default=MAX_TABLE_CHARACTERS, validator=not_negative("max_regexp_characters")
    )
    max_subscriptions: int = attrs.field(
        default=MAX_SUBSCRIPTIONS, validator=not_negative("max_subscriptions")
    )

    def __attrs_post_init__(self) -> None:
        if is_loopback(self.host) and not all(map(is_loopback, self.bus.networks)):
            raise ValueError(
                f"a loopback-only agent (host={self.host!r}) needs a bus of loopback "
                f"networks, such as 127:{self.bus.port}, not {self.bus}"
            )

    def allows(self, address: str) -> bool:
        """Whether a peer at ``address`` may announce itself or connect.

        A loopback-only agent allows this machine's agents alone.
        """
        if is_loopback(address):
            return True
        if is_loopback(self.host):
            return False
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_networks)

    def refuses(self, host: str, port: int) -> bool:
        """Whether ``refuse_peer`` refuses the agent listening on ``host:port``."""
        if self.refuse_peer is None:
            return False
        try:
            return bool(self.refuse_peer(host, port))
        except Exception:  # (the application's predicate: its bug refuses nobody)
            _log.exception("refuse_peer(%r, %d) failed: not refused", host, port)
            return False

    def new_connection(self) -> Connection:
        """The protocol state for a new peer, with these options' limits."""
        regexps = PeerRegexps(
            self.max_regexp_length, self.max_peer_subscriptions, self.max_peer_regexp_bytes
        )
        return Connection(
            java_newlines=self.java_newlines,
            regexps=regexps,
            send_limit=self.send_buffer_limit,
            max_name_length=self.max_name_length,
        )


class BusOptionsArgs(TypedDict, total=False):
    """The options :func:`~trivy.open_ivy_bus` takes by keyword, for type checkers.

    Every :class:`BusOptions` field but ``agent_name`` and ``bus`` (its
    positional arguments), with the type ``BusOptions`` accepts (a
    converter's input, where the field has one). The defaults, checks and
    documentation are ``BusOptions``'s; a test keeps the two in step.
    """

    ready_message: str | None
    host: str
    multicast_ttl: int
    multicast_interface: str | None
    match_mode: MatchMode
    send_buffer_limit: int
    overflow: OverflowPolicy
    java_newlines: bool
    send_to_self: bool
    message_classes: Iterable[str] | str | None
    stop_timeout: float
    leave_timeout: float
    handshake_timeout: float
    stall_timeout: float
    heartbeat_interval: float
    unresponsive_timeout: float
    drop_unresponsive: bool
    dead_host_timeout: float
    allowed_networks: Iterable[str] | str | None
    refuse_peer: Callable[[str, int], bool] | None
    max_regexp_length: int
    max_peer_subscriptions: int
    max_peer_regexp_bytes: int
    max_name_length: int
    max_peers: int
    max_buffered_bytes: int
    max_regexp_characters: int
    max_subscriptions: int


#: The names :func:`~trivy.open_ivy_bus` accepts by keyword.
OPTION_NAMES = frozenset(BusOptionsArgs.__annotations__)

"""The Ivy protocol, version 3, without any I/O.

Pure functions on bytes and strings: message encoding and decoding (with the
tolerances real peers need), the UDP announce datagram, ``IVYBUS`` parsing,
and ivy-c's interval regexps. Nothing here touches a socket or trio, so all
of it is tested on bytes alone.

Text on the wire is UTF-8; bytes that are not valid UTF-8 are decoded with
``surrogateescape`` and encoded back the same way, so they pass through a
trivy agent unchanged instead of crashing the reader or being lost.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

from ._errors import IvyMalformedMessage

__all__ = [
    "ARG_END",
    "ARG_START",
    "DEFAULT_IVYBUS",
    "MAX_MSG_GROUPS",
    "PROTOCOL_VERSION",
    "Announce",
    "BusAddress",
    "Message",
    "MsgType",
    "decode",
    "decode_announce",
    "decode_text",
    "encode",
    "encode_announce",
    "encode_text",
    "expand_intervals",
    "is_multicast",
    "parse_bus",
    "split_msg_params",
]

PROTOCOL_VERSION = 3
#: Separates the message head (``type id``) from its parameters.
ARG_START = "\x02"
#: Terminates each parameter (capture group) of a MSG.
ARG_END = "\x03"
#: ivy-java's escape for a newline inside a text, optional in trivy.
JAVA_NEWLINE_ESCAPE = "\x1a"
#: Network and port used when neither the caller nor ``$IVYBUS`` name a bus.
DEFAULT_IVYBUS = "127:2010"
DEFAULT_PORT = 2010
#: The environment variable every Ivy implementation reads.
IVYBUS_ENV = "IVYBUS"

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class MsgType(enum.IntEnum):
    """The eleven message types of the Ivy protocol, with their wire numbers."""

    BYE = 0
    ADD_REGEXP = 1
    MSG = 2
    ERROR = 3
    DEL_REGEXP = 4
    END_REGEXP = 5
    START_REGEXP = 6
    DIRECT_MSG = 7
    DIE = 8
    PING = 9
    PONG = 10


class Message(NamedTuple):
    """One decoded Ivy line.

    ``type`` is an ``int`` rather than a :class:`MsgType` so that a line of
    an unknown type still decodes (the receiver logs and ignores it).
    ``params`` is everything after ``\\x02``, undivided: only MSG splits it
    into groups (:func:`split_msg_params`).
    """

    type: int
    num_id: int
    params: str


def decode_text(data: bytes) -> str:
    """Decode wire bytes to text, keeping invalid UTF-8 as surrogates."""
    return data.decode(_ENCODING, _ERRORS)


def encode_text(text: str) -> bytes:
    """Encode text for the wire; the inverse of :func:`decode_text`."""
    return text.encode(_ENCODING, _ERRORS)


def encode(msg_type: int, num_id: int, params: str | Sequence[str] = "") -> bytes:
    """Encode one Ivy message as the bytes of one line.

    Args:
      msg_type: the message type (a :class:`MsgType` or its number).
      num_id: the numeric id the type gives meaning to.
      params: a string is sent as it is; a sequence of strings is sent as
        MSG capture groups, each one followed by ``\\x03``.

    Returns:
      The line, ``\\n`` included.

    Raises:
      ValueError: a parameter contains ``\\n``, which would end the line.
    """
    body = params if isinstance(params, str) else "".join(p + ARG_END for p in params)
    if "\n" in body:
        raise ValueError(f"an Ivy message cannot contain a newline: {body!r}")
    return encode_text(f"{int(msg_type)} {num_id}{ARG_START}{body}\n")


def decode(line: bytes | str) -> Message:
    """Decode one line (without its ``\\n``) into a :class:`Message`.

    Raises:
      IvyMalformedMessage: the line does not start with ``type id\\x02``
        where type and id are decimal integers.
    """
    text = decode_text(line) if isinstance(line, bytes) else line
    head, sep, params = text.partition(ARG_START)
    type_text, space, id_text = head.partition(" ")
    if not sep or not space:
        raise IvyMalformedMessage(f"expected 'type id\\x02...', got {text[:80]!r}")
    try:
        msg_type = int(type_text)
        num_id = int(id_text)
    except ValueError:
        raise IvyMalformedMessage(f"type and id must be integers, got {text[:80]!r}") from None
    return Message(msg_type, num_id, params)


#: Groups a MSG may carry: as many as a regexp may have (peers' regexps of
#: more are refused, and so are ours). A line of 524,000 one-byte groups
#: took 47 ms to split and 44 MB to hold.
MAX_MSG_GROUPS = 1000


def split_msg_params(params: str) -> tuple[str, ...]:
    """Split a MSG's parameters into capture groups, as ivy-c reads them.

    Each group ends with ``\\x03``; a last group without its ``\\x03`` still
    counts; nothing at all means no group.
    """
    if not params:
        return ()
    if params[-1] == ARG_END:
        params = params[:-1]
    return tuple(params.split(ARG_END))


# --------------------------------------------------------------------------
# UDP discovery


class Announce(NamedTuple):
    """A decoded discovery datagram: ``version port [agent_id [agent name]]``.

    Old peers send only ``version port``; then ``agent_id`` and
    ``agent_name`` are ``None``.
    """

    version: int
    port: int
    agent_id: str | None
    agent_name: str | None


def encode_announce(port: int, agent_id: str, agent_name: str) -> bytes:
    """The datagram an agent broadcasts once when it joins the bus."""
    if " " in agent_id or "\n" in agent_id or not agent_id:
        raise ValueError(f"an agent id is one token without spaces: {agent_id!r}")
    if "\n" in agent_name:
        raise ValueError(f"an agent name cannot contain a newline: {agent_name!r}")
    return encode_text(f"{PROTOCOL_VERSION} {port} {agent_id} {agent_name}\n")


def decode_announce(data: bytes) -> Announce:
    """Decode a discovery datagram.

    Raises:
      IvyMalformedMessage: it does not start with ``version port``.
    """
    text = decode_text(data).rstrip("\r\n")
    fields = text.split(" ", 3)
    if len(fields) < 2:
        raise IvyMalformedMessage(f"bad announce datagram: {text[:80]!r}")
    try:
        version, port = int(fields[0]), int(fields[1])
    except ValueError:
        raise IvyMalformedMessage(f"bad announce datagram: {text[:80]!r}") from None
    if not 0 < port < 65536:
        raise IvyMalformedMessage(f"bad port in announce datagram: {text[:80]!r}")
    agent_id = fields[2] if len(fields) > 2 and fields[2] else None
    agent_name = fields[3] if len(fields) > 3 else None
    return Announce(version, port, agent_id, agent_name)


# --------------------------------------------------------------------------
# The bus address


class BusAddress(NamedTuple):
    """Where an agent announces itself: one or more networks and a UDP port."""

    networks: tuple[str, ...]
    port: int

    def __str__(self) -> str:
        return f"{','.join(self.networks)}:{self.port}"


def is_multicast(address: str) -> bool:
    """Whether an address is a multicast group (IPv4 224–239, IPv6 ``ff..``)."""
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False


def _complete_network(network: str, bus: str) -> str:
    network = network.strip()
    if ":" in network:  # IPv6 (ivy-c accepts one)
        try:
            return str(ipaddress.IPv6Address(network.strip("[]")))
        except ValueError:
            raise ValueError(f"bad Ivy bus {bus!r}: {network!r}") from None
    octets = network.strip(".").split(".")
    if not 1 <= len(octets) <= 4 or not all(
        o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets
    ):
        raise ValueError(f"bad Ivy bus {bus!r}: {network!r} is not an IPv4 network")
    octets += ["255"] * (4 - len(octets))
    return ".".join(str(int(o)) for o in octets)


def parse_bus(bus: str | None = None) -> BusAddress:
    """Parse an Ivy bus string ``NETWORKS:PORT``.

    ``None`` or ``""`` means :data:`DEFAULT_IVYBUS` (``127:2010``); reading
    ``$IVYBUS`` first is the caller's business (:class:`trivy.BusOptions`
    does it), so that this module reads nothing from its environment.
    Partial networks are completed with ``.255`` (``192.168.12`` →
    ``192.168.12.255``); several are separated by commas; a missing network
    (``:2345``) means the default one; a missing port means 2010.

    Raises:
      ValueError: the string is malformed; the message names it.
    """
    if not bus:
        bus = DEFAULT_IVYBUS
    text = bus.strip()
    networks_text, sep, port_text = text.rpartition(":")
    if not sep:
        networks_text, port_text = text, str(DEFAULT_PORT)
    elif "[" not in text and text.count(":") > 1 and not port_text.isdigit():
        # a bare IPv6 address without a port: "ff02::1"
        networks_text, port_text = text, str(DEFAULT_PORT)
    networks_text = networks_text.strip() or DEFAULT_IVYBUS.split(":")[0]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad Ivy bus {bus!r}: port {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad Ivy bus {bus!r}: port {port} out of range")
    networks = tuple(_complete_network(n, bus) for n in networks_text.split(","))
    return BusAddress(networks, port)


# --------------------------------------------------------------------------
# ivy-c interval regexps: (?Imin#max) and (?Imin#maxi)

_INTERVAL = re.compile(r"\(\?I(-?\d+(?:\.\d+)?)#(-?\d+(?:\.\d+)?)(i?)\)")


def _digits_range(low: str, high: str) -> str:
    """Regexp for digit strings of one length between low and high inclusive."""
    if low == high:
        return low
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + "(?:" + _digits_range(low[1:], high[1:]) + ")"
    rest = len(low) - 1
    parts = [low[0] + "(?:" + _digits_range(low[1:], "9" * rest) + ")"]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]\\d{{{rest}}}")
    parts.append(high[0] + "(?:" + _digits_range("0" * rest, high[1:]) + ")")
    return "|".join(parts)


def _natural_range(low: int, high: int) -> str:
    """Regexp for the decimal writing of the integers in [low, high] (>= 0)."""
    parts = []
    length = len(str(low))
    while low <= high:
        top = min(high, 10**length - 1)
        low_text = str(low)
        parts.append(_digits_range(low_text, str(top)))
        low = top + 1
        length += 1
    return "|".join(f"(?:{p})" for p in parts)


def _integer_range(low: int, high: int) -> str:
    """Regexp for the integers in [low, high], negative ones with a ``-``."""
    parts = []
    if low < 0:
        parts.append("-(?:" + _natural_range(max(-high, 1), -low) + ")")
    if high >= 0:
        parts.append(_natural_range(max(low, 0), high))
    return "|".join(parts) if parts else "(?!)"


def _magnitude_range(low: int, high: int) -> str:
    """Regexp for decimal numbers (no sign) whose value is in [low, high]."""
    alternatives = []
    if low <= high - 1:
        alternatives.append(f"(?:{_natural_range(low, high - 1)})(?:\\.\\d+)?")
    alternatives.append(f"{high}(?:\\.0+)?")
    return "|".join(f"(?:{a})" for a in alternatives)


def _interval_regexp(low_text: str, high_text: str, *, integers_only: bool) -> str:
    # Decimal bounds are rounded inwards: the interval stays within them.
    low, high = math.ceil(float(low_text)), math.floor(float(high_text))
    if low > high:
        raise ValueError(f"empty interval (?I{low_text}#{high_text})")
    alternatives = []
    if low < 0:
        negative_low = max(-high, 1 if integers_only else 0)
        magnitudes = (
            _natural_range(negative_low, -low)
            if integers_only
            else _magnitude_range(negative_low, -low)
        )
        alternatives.append(f"-(?:{magnitudes})")
    if high >= 0:
        alternatives.append(
            _natural_range(max(low, 0), high)
            if integers_only
            else _magnitude_range(max(low, 0), high)
        )
    body = "|".join(f"(?:{a})" for a in alternatives)
    # A number is taken whole: no digit, point or sign glued to either end.
    return f"((?<![\\d.-])(?:{body}))(?![\\d.])"


def expand_intervals(regexp: str) -> str:
    """Expand ivy-c's interval syntax into a plain regexp.

    ``(?Imin#max)`` matches a number between min and max, decimals allowed;
    ``(?Imin#maxi)`` integers only. Each interval becomes one capturing
    group (it is written as a group), so ``^alt=(?I-10#2000i)$`` captures
    the altitude. The subscriber expands it before sending the regexp, so
    peers see an ordinary regexp.

    Raises:
      ValueError: an interval whose min is above its max.
    """
    return _INTERVAL.sub(
        lambda m: _interval_regexp(m.group(1), m.group(2), integers_only=m.group(3) == "i"), regexp
    )

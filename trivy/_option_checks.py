"""The checks :class:`~trivy._options.BusOptions` runs on its fields.

Each one raises ValueError with a message naming the option, so a bad
value is refused before any socket is opened.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ._matching import MATCH_MODES
from ._message_classes import check_class

__all__ = [
    "MAX_ONE_LINE",
    "check_mode",
    "check_overflow",
    "check_ttl",
    "classes",
    "networks",
    "not_negative",
    "one_line",
    "positive",
]

#: Longest agent name or ready message: it goes out in one line (START_REGEXP,
#: or a MSG) that a peer with default limits must accept.
MAX_ONE_LINE = 64 * 1024
_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def one_line(what: str, allow_empty: bool) -> _Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is None:
            return
        if "\n" in value or (not value and not allow_empty):
            empty = "" if allow_empty else "non-empty, "
            raise ValueError(f"{what} must be {empty}without newline: {value[:80]!r}")
        if len(value.encode("utf-8", "surrogateescape")) > MAX_ONE_LINE:
            raise ValueError(f"{what} is longer than peers accept ({MAX_ONE_LINE} bytes)")

    return check


def networks(value: Iterable[str] | str | None) -> tuple[ipaddress.IPv4Network, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        return tuple(ipaddress.IPv4Network(network, strict=False) for network in value)
    except ValueError as exc:
        raise ValueError(f"allowed_networks: {exc}") from None


def classes(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return tuple(dict.fromkeys(check_class(word) for word in value))


def check_ttl(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError(f"multicast_ttl must be within 0..255, not {value}")


def check_overflow(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("drop", "disconnect"):
        raise ValueError(f"overflow must be 'drop' or 'disconnect', not {value!r}")


def check_mode(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in MATCH_MODES:
        raise ValueError(f"match_mode must be one of {MATCH_MODES}, not {value!r}")


def not_negative(what: str) -> _Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if not value >= 0:
            raise ValueError(f"{what} cannot be negative: {value!r}")

    return check


def positive(what: str) -> _Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if not value > 0:
            raise ValueError(f"{what} must be positive (math.inf: never): {value!r}")

    return check

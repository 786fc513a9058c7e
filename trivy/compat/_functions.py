"""ivy-python's module functions, as thin wrappers over :mod:`trivy.protocol`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .. import protocol
from ._constants import ARG_END, MSG


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
    address = protocol.parse_bus(ivybus or os.environ.get(protocol.IVYBUS_ENV))
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

    #: The server whose connection it would serve (never set: not constructible).
    server: Any = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        raise NotImplementedError("IvyHandler is internal to ivy-python; trivy has no equivalent")

    def handle(self) -> None:
        """Not supported (see the class)."""
        raise NotImplementedError("trivy's sessions read the connections")

    def process_ivymessage(self, msg: str, client: Any) -> bool:
        """Not supported (see the class)."""
        raise NotImplementedError("trivy's sessions parse the protocol")

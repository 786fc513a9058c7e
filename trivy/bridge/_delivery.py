"""Messages from other sites, handed to the local agents by their senders' proxies."""

from __future__ import annotations

from typing import Any

import trivy
from trivy.protocol import MsgType

from ._agent_state import agent_key
from ._limits import LimitedLog, cut

__all__ = ["hand_over"]


def hand_over(
    bus: trivy.IvyBus | None, item: dict[str, Any], *, allow_die: bool, log: LimitedLog
) -> None:
    """Hand ``item`` to the local agent it is for, by the sender's proxy's
    ``bus`` (None: the sender is unknown here, the message dropped and logged).

    Raises:
      ValueError, KeyError, TypeError: a malformed message.
    """
    if bus is None:
        log.info(
            "unknown sender",
            "a message from %s of %s, unknown here: dropped",
            cut(item["from"]), cut(item["from_site"]),
        )  # fmt: skip
        return
    target = next((p for p in bus.peers if agent_key(p) == item["to"]), None)
    if target is None:
        log.info("gone receiver", "a message for %s, gone: dropped", cut(item["to"]))
        return
    if item["kind"] == "msg":
        groups = [str(g) for g in item["groups"]]
        bus.send_raw(target, MsgType.MSG, _number(item["sub"]), groups)
    elif item["kind"] == "direct":
        bus.send_direct(target, _number(item["num_id"]), str(item["text"]))
    elif item["kind"] == "error":
        bus.send_error(target, _number(item["num_id"]), str(item["text"]))
    elif item["kind"] == "die" and allow_die:
        bus.send_die(target, _number(item["num_id"]))


def _number(value: Any) -> int:
    """An id from another site: an int, or ValueError (a float's is not one)."""
    if type(value) is not int:
        raise ValueError(f"an id is an integer, not {cut(repr(value))}")
    return value

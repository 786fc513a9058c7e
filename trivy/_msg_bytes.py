"""The bytes of the MSGs we send, made once and shared.

A text that matches a regexp many peers hold is encoded once: its payload
(:func:`msg_payload`) goes to each of them after the head of their
subscription (:func:`msg_head`), which is made once per id.
"""

from __future__ import annotations

from collections.abc import Sequence

from .protocol import ARG_END

__all__ = ["MAX_CACHED_HEAD", "MSG_HEADS", "MSG_IDS", "msg_head", "msg_id", "msg_payload"]

_join = ARG_END.join
_LAST_END = ARG_END + "\n"  # (one concatenation: cheaper than a tuple to join)

#: ``b"2 <id>\\x02"`` by subscription id: the head of every MSG we send, made
#: once per id. Our own ids are few; :func:`msg_head` caps the cache anyway,
#: since ``send_raw`` takes any id.
MSG_HEADS: dict[int, bytes] = {}
_MAX_MSG_HEADS = 4096
#: Longest head (or incoming id) kept in a cache: peers choose the ids.
MAX_CACHED_HEAD = 24


def msg_head(sub_id: int) -> bytes:
    """``b"2 <sub_id>\\x02"``, from :data:`MSG_HEADS` when it is there."""
    head = MSG_HEADS.get(sub_id)
    if head is None:
        head = b"2 %d\x02" % sub_id
        if len(MSG_HEADS) < _MAX_MSG_HEADS and len(head) <= MAX_CACHED_HEAD:
            MSG_HEADS[sub_id] = head  # peers choose the ids: only short ones
    return head


#: ``"2 <id>"`` → id, for the heads of the MSGs the peers send us: parsed
#: once for every connection (the ids are ours, the same for all peers),
#: and only ours are likely: ids under this, written as we write them.
#: Heads are not remembered per connection (4,096 junk heads each kept
#: 660 KB a connection).
MSG_IDS: dict[str, int] = {}
_MAX_MSG_ID = 4096


def msg_id(head: str) -> int:
    """The subscription id of a MSG's head ``"2 <id>"`` (-1: none)."""
    try:
        sub_id = int(head[2:])
    except ValueError:
        return -1
    if 0 <= sub_id < _MAX_MSG_ID and head[2:] == str(sub_id):
        MSG_IDS[head] = sub_id
    return sub_id


def msg_payload(groups: Sequence[str]) -> bytes:
    """The bytes after a MSG's head: each group ended by ``\\x03``, then ``\\n``.

    Made once per matching regexp and shared by every subscriber of it.
    """
    if not groups:
        return b"\n"
    return (_join(groups) + _LAST_END).encode("utf-8", "surrogateescape")

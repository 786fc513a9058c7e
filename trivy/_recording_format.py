"""The recording format of ``trivy record`` / ``trivy replay``: JSON Lines, sans-IO.

The first line is a header naming the format and its version; each line
after it is one record::

    {"trivy_recording": 1, "bus": "127.255.255.255:2010", "started": "2026-11-27T23:00:00+00:00"}
    {"t": 0.0, "event": "connected", "agent": "A", "host": "127.0.0.1"}
    {"t": 0.0, "event": "subscribed", "agent": "A", "host": "127.0.0.1", "id": 0, "regexp": "^x"}
    {"t": 1.25, "event": "msg", "agent": "A", "host": "127.0.0.1", "text": "hello"}
    {"t": 3.5, "event": "disconnected", "agent": "A", "host": "127.0.0.1"}

``t`` is seconds since the recording started (a monotonic clock). Events:
``msg`` (a text an agent sent), ``connected``, ``disconnected``,
``subscribed`` and ``unsubscribed`` (with the subscription's ``id`` and
``regexp``; a changed regexp is ``subscribed`` again with the same id).
Bytes that were not UTF-8 are kept as JSON's ``\\udcXX`` escapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any

import attrs

__all__ = [
    "EVENTS",
    "FORMAT_VERSION",
    "Record",
    "RecordingError",
    "decode_records",
    "encode_header",
    "encode_record",
    "json_string",
]

#: The version this code writes and reads.
FORMAT_VERSION = 1
#: The record kinds, and the fields each one has besides ``t``, ``event``,
#: ``agent`` and ``host``.
EVENTS: dict[str, tuple[str, ...]] = {
    "msg": ("text",),
    "connected": (),
    "disconnected": (),
    "subscribed": ("id", "regexp"),
    "unsubscribed": ("id", "regexp"),
}


#: A string as JSON (quoted, escaped: the same as ``json.dumps`` writes it).
json_string: Callable[[str], str] = encode_basestring_ascii


class RecordingError(ValueError):
    """A file that is not a recording trivy can read; the message names the line."""


@attrs.frozen
class Record:
    """One line of a recording (see the module's docstring)."""

    t: float
    event: str
    agent: str
    host: str
    text: str = ""
    id: int = 0
    regexp: str = ""


def encode_header(bus: str, started: str) -> str:
    """The first line of a recording (with its newline)."""
    return json.dumps({"trivy_recording": FORMAT_VERSION, "bus": bus, "started": started}) + "\n"


def encode_record(record: Record) -> str:
    """One record as a line (with its newline)."""
    fields: dict[str, Any] = {
        "t": round(record.t, 6),
        "event": record.event,
        "agent": record.agent,
        "host": record.host,
    }
    for name in EVENTS[record.event]:
        fields[name] = getattr(record, name)
    return json.dumps(fields) + "\n"


def decode_records(lines: Iterable[str]) -> Iterator[dict[str, Any] | Record]:
    """The header (a dict), then each record, from a recording's lines.

    Raises:
      RecordingError: not a recording, an unknown version, or a line that
        is not a valid record (truncated, corrupt); the message names the
        line by its number.
    """
    number = 0
    for number, line in enumerate(lines, 1):
        if number == 1:
            yield _header(line)
            continue
        if not line.strip():
            continue
        yield _record(number, line)
    if number == 0:
        raise RecordingError("line 1: an empty file, not a trivy recording")


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or "trivy_recording" not in header:
        raise RecordingError("line 1: not a trivy recording (no header)")
    version = header["trivy_recording"]
    if version != FORMAT_VERSION:
        raise RecordingError(
            f"line 1: recording format version {version!r}; this trivy reads {FORMAT_VERSION}"
        )
    return header


def _record(number: int, line: str) -> Record:
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as exc:
        truncated = " (truncated?)" if not line.endswith("\n") else ""
        raise RecordingError(f"line {number}: not JSON{truncated}: {exc.msg}") from None
    if not isinstance(fields, dict):
        raise RecordingError(f"line {number}: not a record")
    event = fields.get("event")
    if event not in EVENTS:
        raise RecordingError(f"line {number}: unknown event {event!r}")
    try:
        t = float(fields["t"])
        agent, host = fields["agent"], fields["host"]
        extra = {name: fields[name] for name in EVENTS[event]}
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"line {number}: a {event} record without a valid {exc}") from None
    if not (isinstance(agent, str) and isinstance(host, str)) or not t >= 0:
        raise RecordingError(f"line {number}: bad agent, host or time")
    if not all(isinstance(extra.get(k, ""), str) for k in ("text", "regexp")) or not isinstance(
        extra.get("id", 0), int
    ):
        raise RecordingError(f"line {number}: bad field types in a {event} record")
    return Record(t=t, event=event, agent=agent, host=host, **extra)

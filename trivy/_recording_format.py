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

A recording is read as untrusted input (anyone may hand one over): a line
is read up to :data:`MAX_RECORD_LINE` characters and no further, and every
field is checked against what the protocol carries (finite times, ids in
range, texts that fit a MSG and hold no newline, names of one line).
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
    "MAX_RECORD_LINE",
    "Record",
    "RecordingError",
    "bounded_lines",
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


#: The longest line read, in characters: a record of the longest text a MSG
#: carries (1 MiB), every character escaped as JSON's ``\\uXXXX`` at worst.
MAX_RECORD_LINE = 6 * 1024 * 1024 + 4096
#: The longest time a record may give (seconds: about 30 years).
MAX_TIME = 1e9
#: The largest subscription id (the protocol's, see ``_peer_regexps``).
MAX_ID = 2**63 - 1
#: Longest agent name, host and regexp a record may give.
MAX_NAME = 1024
MAX_HOST = 256
MAX_REGEXP = 16 * 1024
#: Longest text, in UTF-8 bytes: what one MSG line we receive carries (a
#: 1 MiB line: ``2 0\x02`` and ``\x03\n`` around it). A replay sends up
#: to 24 bytes less (its own MSG's id may be longer); past that it skips
#: the text.
MAX_TEXT = 1024 * 1024 - 5

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


def bounded_lines(file: Any) -> Iterator[str]:
    """The lines of a text file, each read up to :data:`MAX_RECORD_LINE` characters.

    Raises:
      RecordingError: a longer line (a file of one endless line, or a
        decompression bomb, is refused after that many characters).
    """
    number = 0
    while line := file.readline(MAX_RECORD_LINE + 1):
        number += 1
        if len(line) > MAX_RECORD_LINE:
            raise RecordingError(f"line {number}: over {MAX_RECORD_LINE} characters")
        yield line


def decode_records(lines: Iterable[str]) -> Iterator[dict[str, Any] | Record | None]:
    """The header (a dict), then each record (None for a blank line), from a
    recording's lines.

    Raises:
      RecordingError: not a recording, an unknown version, or a line that
        is not a valid record (truncated, corrupt); the message names the
        line by its number.
    """
    number = 0
    for number, line in enumerate(lines, 1):
        if number == 1:
            yield _header(line)
        elif line.strip():
            yield _record(number, line)
        else:
            yield None  # (a blank line: a reader on an event loop may yield meanwhile)
    if number == 0:
        raise RecordingError("line 1: an empty file, not a trivy recording")


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):  # (not JSON, nested too deep, a huge number)
        header = None
    if not isinstance(header, dict) or "trivy_recording" not in header:
        raise RecordingError("line 1: not a trivy recording (no header)")
    version = header["trivy_recording"]
    if version != FORMAT_VERSION:
        raise RecordingError(
            f"line 1: recording format version {_shown(version)}; this trivy reads {FORMAT_VERSION}"
        )
    return header


def _record(number: int, line: str) -> Record:
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as exc:
        truncated = " (truncated?)" if not line.endswith("\n") else ""
        raise RecordingError(f"line {number}: not JSON{truncated}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a number of 5,000 digits, nesting
        raise RecordingError(f"line {number}: not a record: {type(exc).__name__}") from None
    if not isinstance(fields, dict):
        raise RecordingError(f"line {number}: not a record")
    event = fields.get("event")
    if not isinstance(event, str) or event not in EVENTS:
        raise RecordingError(f"line {number}: unknown event {_shown(event)}")
    for name in ("t", "agent", "host", *EVENTS[event]):
        if name not in fields:
            raise RecordingError(f"line {number}: a {event} record without {name!r}")
        value = fields[name]
        kinds, said = _FIELDS[name]
        if type(value) not in kinds:  # (type(): a bool is no number here)
            what = f"{type(value).__name__} {_shown(value)}"
            raise RecordingError(f"line {number}: {name!r} must be {said}, not {what}")
    t, agent, host = fields["t"], fields["agent"], fields["host"]
    if not 0 <= t <= MAX_TIME:  # (NaN fails both)
        raise RecordingError(f"line {number}: 't' must be 0 to {MAX_TIME:g} seconds, not {t!r}")
    extra = {name: fields[name] for name in EVENTS[event]}
    problem = _beyond_the_protocol(agent, host, extra)
    if problem:
        raise RecordingError(f"line {number}: {problem}")
    return Record(t=t, event=event, agent=agent, host=host, **extra)


#: The JSON types each field may have, and how to say it.
_SECONDS = ((float, int), "a number of seconds")
_STRING = ((str,), "a string")
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "t": _SECONDS,
    "agent": _STRING,
    "host": _STRING,
    "text": _STRING,
    "regexp": _STRING,
    "id": ((int,), "an integer"),
}


def _shown(value: object) -> str:
    """A value of a bad field, as an error shows it: its start only."""
    shown = repr(value)
    return shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown)} characters)"


def _encodable(*strings: str) -> bool:
    """Whether these strings are bytes a line could carry (not a lone
    surrogate JSON's ``\ud800`` gives, which no UTF-8 line holds)."""
    try:
        for string in strings:
            if not string.isascii():
                string.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _beyond_the_protocol(agent: str, host: str, extra: dict[str, Any]) -> str:
    """What in a record's fields the protocol cannot carry ("" if nothing).

    An empty agent name is a name a peer may give (a recording of it stays
    readable; a replay skips what no agent of ours can play)."""
    text, regexp, sub_id = extra.get("text", ""), extra.get("regexp", ""), extra.get("id", 0)
    if len(agent) > MAX_NAME or "\n" in agent or len(host) > MAX_HOST:
        return "an agent name or host no agent could have"
    if not 0 <= sub_id <= MAX_ID:
        return f"a subscription id out of range: {str(sub_id)[:20]}"
    if "\n" in text or "\n" in regexp:
        return "a text or regexp with a newline, which no Ivy line carries"
    if len(regexp) > MAX_REGEXP or (
        len(text) > MAX_TEXT // 4 and len(text.encode("utf-8", "surrogateescape")) > MAX_TEXT
    ):
        return "a text or regexp longer than a MSG line carries"
    if not _encodable(agent, host, text, regexp):
        return "a lone surrogate, which no Ivy line carries"
    return ""

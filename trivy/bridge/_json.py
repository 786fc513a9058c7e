"""Bounds on what parsing a bridge message costs the event loop.

``json.loads`` runs in one go and holds the GIL (a thread would not help):
a 4 MiB message of 200,000 empty lists nested 20 deep took 0.9 s of the
loop, one of 2 million zeros 80 ms. What a parse costs grows with the
message's *structure*, not its size: the separators and containers
(``,``, ``:``, ``[``, ``{``) outside its strings, and long integers
(quadratic in their digits). :func:`loads` counts those first, with
``bytes`` methods (C, a few ms for 4 MiB), and refuses a message over
:data:`MAX_JSON_TOKENS`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_JSON_TOKENS",
    "MAX_RECOUNTED",
    "TooCostly",
    "json_tokens",
    "loads",
]

#: Structural tokens a bridge message may hold. Measured (CPython 3.11): the
#: costliest shapes parse at 200 ns a token (floats), 120 ns (nested lists),
#: so a message within the cap takes 8 ms at most. The largest messages a
#: bridge sends hold far fewer: an agent of 10,000 regexps (the cap per
#: agent) 20,000, a text of 1 MiB a dozen (what is inside strings is not
#: counted: see :func:`json_tokens`).
MAX_JSON_TOKENS = 40_000
#: Largest message whose tokens are counted outside its strings when over
#: the cap (a few passes over it: 7 ms for 2 MiB); a larger one over the cap
#: is refused as it is (a text of 1 MiB, JSON-escaped, is 1 to 2 MiB).
MAX_RECOUNTED = 2 * 1024 * 1024
#: Digits of an integer a bridge message may hold (ids are 19 at most): a
#: longer one costs quadratic time (4 MiB of 4,000-digit ones: 70 ms).
MAX_INT_DIGITS = 40

_NOT_TOKENS = bytes(c for c in range(256) if c not in b",:[{")


class TooCostly(ValueError):
    """A message whose parse would hold the event loop too long."""


def json_tokens(payload: bytes) -> int:
    """The structural tokens of a JSON text; those inside its strings are
    counted too when telling the strings apart would itself cost too much
    (over :data:`MAX_RECOUNTED` bytes, or too many strings)."""
    tokens = len(payload.translate(None, _NOT_TOKENS))
    if tokens <= MAX_JSON_TOKENS or len(payload) > MAX_RECOUNTED:
        return tokens
    # Many tokens, maybe inside strings (a text of commas): counted outside them.
    if b"\\" in payload:  # (an escaped backslash, then an escaped quote: JSON's order)
        payload = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes = payload.count(b'"')
    if not quotes or quotes > 4 * MAX_JSON_TOKENS:  # (none, or too many to split on)
        return tokens
    return len(b"".join(payload.split(b'"')[::2]).translate(None, _NOT_TOKENS))


def _int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:
        raise TooCostly(f"an integer of {len(digits)} digits")
    return int(digits)


def loads(payload: bytes) -> Any:
    """``json.loads``, once its cost is known to be bounded.

    Raises:
      TooCostly: over :data:`MAX_JSON_TOKENS` tokens, or an integer over
        :data:`MAX_INT_DIGITS` digits.
      ValueError: not JSON (NaN and Infinity included), a float (no bridge
        message holds one), or nested too deep.
    """
    tokens = json_tokens(payload)
    if tokens > MAX_JSON_TOKENS:
        raise TooCostly(f"{tokens} JSON tokens, over {MAX_JSON_TOKENS}")
    try:
        return json.loads(
            payload, parse_int=_int, parse_float=_no_float, parse_constant=_no_constant
        )
    except RecursionError:  # (a few KB of brackets: no site sends that)
        raise ValueError("JSON nested too deep") from None


def _no_float(digits: str) -> Any:
    # No bridge message holds one, and floats are the costliest tokens to
    # parse (40,000 took 22-28 ms on a loaded 2-core machine): refused at the first.
    raise ValueError("a number with a fraction or an exponent: no id is one")


def _no_constant(name: str) -> Any:
    # NaN and Infinity are Python's, not JSON's: no id or count is one.
    raise ValueError(f"{name} is not JSON")

"""Peers' regexps that could take forever: which texts are safe, and a guarded match.

Every agent runs its peers' regexps on its own texts, and Python's ``re``
backtracks: ``^(a+)+$`` takes hours on 41 characters. Running every search
under a timeout would cost seven times a plain search, so the guard acts at
subscription time instead. :func:`safe_length` reads the regexp's structure:

- a repeat that contains a variable repeat, an alternation or a
  backreference can backtrack exponentially: no text is safe for ``re``;
- otherwise a search costs at most about ``n ** (k + 1)`` steps for a text
  of ``n`` characters, ``k`` being the count of long repeats (``n ** k``
  when anchored at the start), so texts up to the length that keeps this
  under :data:`SAFE_STEPS` stay on ``re``'s fast path.

Longer texts, and every text for a suspect regexp, are matched by the
``regex`` package (the same syntax and groups) under :data:`MATCH_TIMEOUT`;
a regexp that runs out of time is disabled (its peer gets an ERROR).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import regex  # type: ignore[import-untyped]

__all__ = ["MATCH_TIMEOUT", "SAFE_STEPS", "GuardTimeout", "guarded_find", "safe_length"]

try:  # the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c
    import sre_parse as _parser

#: Backtracking steps a plain ``re`` search may take at worst: about 10 ms.
SAFE_STEPS = 10_000_000
#: Seconds a guarded search may take before its regexp is disabled. A send
#: runs every matching regexp; one slow regexp costs it this much, once.
MATCH_TIMEOUT = 0.02
#: A repeat that may run more than this many times counts as long.
LONG_REPEAT = 64
#: What a guarded search raises when it runs out of time.
GuardTimeout = TimeoutError

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}
_ALWAYS_FAST = 1 << 62


def _walk(items: Any, inside_repeat: bool) -> tuple[int, bool]:
    """(long repeats, suspect) for a parsed (sub)pattern."""
    long_repeats, suspect = 0, False
    for op, av in items:
        subpatterns: list[Any] = []
        if op in _REPEATS:
            low, high, sub = av
            if inside_repeat and high > low:
                suspect = True  # a variable repeat inside a repeat
            long_repeats += high > LONG_REPEAT
            inner_long, inner_suspect = _walk(sub, inside_repeat or high > 1)
            long_repeats += inner_long
            suspect = suspect or inner_suspect
            continue
        if op is _c.SUBPATTERN:
            subpatterns = [av[3]]
        elif op is _c.BRANCH:
            suspect = suspect or inside_repeat  # alternatives that may overlap, repeated
            subpatterns = list(av[1])
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            subpatterns = [av[1]]
        elif op is getattr(_c, "ATOMIC_GROUP", None):
            subpatterns = [av]
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            suspect = True  # backreferences: no simple bound
            if op is _c.GROUPREF_EXISTS:
                subpatterns = [s for s in av[1:] if s is not None]
        for sub in subpatterns:
            inner_long, inner_suspect = _walk(sub, inside_repeat)
            long_repeats += inner_long
            suspect = suspect or inner_suspect
    return long_repeats, suspect


def safe_length(regexp: str, anchored: bool) -> int:
    """The longest text ``re`` may search with ``regexp`` without a guard (0: none).

    Args:
      regexp: a regexp that ``re`` compiles.
      anchored: whether matching starts at the beginning of the text anyway
        (``match``/``fullmatch`` modes).
    """
    parsed = list(_parser.parse(regexp))
    long_repeats, suspect = _walk(parsed, False)
    if suspect:
        return 0
    anchored = anchored or (bool(parsed) and parsed[0] == (_c.AT, _c.AT_BEGINNING))
    power = long_repeats + (0 if anchored else 1)
    if power == 0:
        return _ALWAYS_FAST
    return int(SAFE_STEPS ** (1 / power))


def guarded_find(regexp: str, mode: str) -> Callable[[str], Any]:
    """``regex``'s search/match/fullmatch for ``regexp``, under :data:`MATCH_TIMEOUT`.

    It raises :data:`GuardTimeout` when a text takes longer. A regexp that
    ``regex`` cannot compile is searched by ``re``, unguarded (none of the
    regexps tried so far).
    """
    try:
        pattern = regex.compile(regexp, regex.VERSION0)
    except (regex.error, ValueError, OverflowError, RecursionError):
        found: Callable[[str], Any] = getattr(re.compile(regexp), mode)
        return found
    return partial(getattr(pattern, mode), timeout=MATCH_TIMEOUT)

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
#: Largest pattern once its counted repeats are unrolled: ``regex`` builds
#: that much when it compiles, ``(?:a{3000}){3000}`` took it 4 s and 2 GB.
MAX_UNROLLED = 100_000
#: What a guarded search raises when it runs out of time.
GuardTimeout = TimeoutError

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}
_ALWAYS_FAST = 1 << 62
#: Syntax that ``regex`` reads otherwise than ``re``: POSIX classes, fuzzy
#: constraints, possessive repeats.
_REGEX_ONLY = re.compile(r"\[\[?:|\{\s*[eisd]\s*[<=]|[*+?}]\+")


def _walk(items: Any, *, inside_repeat: bool) -> tuple[int, bool, int]:
    """(choice points, suspect, unrolled size) of a parsed (sub)pattern.

    A choice point is a repeat of variable length or an alternation: each
    multiplies the ways ``re`` may try to match. Suspect: a choice point
    inside a repeat, or a backreference. The unrolled size is what an engine
    that expands counted repeats (``regex`` does) would build.
    """
    choices, suspect, size = 0, False, 0
    for op, av in items:
        subpatterns: list[Any] = []
        if op in _REPEATS:
            low, high, sub = av
            variable = high > low
            suspect = suspect or (inside_repeat and variable)
            choices += variable
            repeated = inside_repeat or high > 1
            inner_choices, inner_suspect, inner_size = _walk(sub, inside_repeat=repeated)
            choices += inner_choices
            suspect = suspect or inner_suspect
            size += inner_size * (low + 1 if high == _c.MAXREPEAT else high)
            continue
        size += 1
        if op is _c.SUBPATTERN:
            subpatterns = [av[3]]
        elif op is _c.BRANCH:
            choices += 1
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
            inner_choices, inner_suspect, inner_size = _walk(sub, inside_repeat=inside_repeat)
            choices += inner_choices
            suspect = suspect or inner_suspect
            size += inner_size
    return choices, suspect, size


def safe_length(regexp: str, *, anchored: bool) -> int:
    """The longest text ``re`` may search with ``regexp`` without a guard (0: none).

    With ``c`` choice points, ``re`` tries at most about ``n ** c``
    combinations on a text of ``n`` characters (times ``n`` start positions
    when the search is not anchored): texts up to the ``n`` that keeps this
    under :data:`SAFE_STEPS` are safe.

    Args:
      regexp: a regexp that ``re`` compiles.
      anchored: whether matching starts at the beginning of the text anyway
        (``match``/``fullmatch`` modes).

    Raises:
      ValueError: the regexp is too big to be matched safely (counted
        repeats that would unroll past :data:`MAX_UNROLLED`).
    """
    parsed = list(_parser.parse(regexp))
    choices, suspect, size = _walk(parsed, inside_repeat=False)
    if size > MAX_UNROLLED:
        raise ValueError(f"regexp too big to match safely (counted repeats of {size})")
    if suspect:
        return 0
    anchored = anchored or (bool(parsed) and parsed[0] == (_c.AT, _c.AT_BEGINNING))
    power = choices + (0 if anchored else 1)
    if power == 0:
        return _ALWAYS_FAST
    return int(SAFE_STEPS ** (1 / power))


def guarded_find(regexp: str, mode: str) -> Callable[[str], Any]:
    """``regex``'s search/match/fullmatch for ``regexp``, under :data:`MATCH_TIMEOUT`.

    Compiled when the regexp is subscribed (not while sending). It raises
    :data:`GuardTimeout` when a text takes longer.

    Raises:
      ValueError: ``regex`` cannot take the regexp the way ``re`` does (it
        fails to compile it, or would read it differently: POSIX classes
        like ``[[:alpha:]]``, fuzzy matching like ``{e<=1}``, possessive
        repeats). Such a regexp is refused when it needs the guard.
    """
    if _REGEX_ONLY.search(regexp):
        raise ValueError("regexp needs the guard, and the guarded engine would read it differently")
    try:
        pattern = regex.compile(regexp, regex.VERSION0, cache_pattern=False)  # dies with its entry
    except (regex.error, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise ValueError(f"regexp needs the guard, which cannot take it: {exc}") from None
    return partial(getattr(pattern, mode), timeout=MATCH_TIMEOUT)

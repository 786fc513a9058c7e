"""Peers' regexps that could take forever: which texts are safe, and a guarded match.

Every agent runs its peers' regexps on its own texts, and Python's ``re``
backtracks: ``^(a+)+$`` takes hours on 41 characters. Running every search
under a timeout would cost seven times a plain search, so the guard acts at
subscription time instead. :func:`check_regexp` parses the regexp (cheap,
linear) and, before anything compiles it:

- refuses one whose compiling would cost more than
  :data:`~trivy._regexp_cost.MAX_COMPILE_STEPS` (character classes over
  much of Unicode) or whose counted repeats the guarded engine would
  unroll past :data:`MAX_UNROLLED`;
- bounds the steps of one search on a text of ``n`` characters
  (:class:`~trivy._regexp_cost.SearchCost`) and returns the longest text
  that keeps it under :data:`SAFE_STEPS`, or under
  :data:`SAFE_STEPS_PER_CHAR` a character: such texts stay on ``re``'s fast
  path.

Longer texts, and every text for a regexp whose bound explodes, are
matched by the ``regex`` package (the same syntax and groups) under
:data:`MATCH_TIMEOUT`; a regexp that runs out of time is disabled (its
peer gets an ERROR).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import regex  # type: ignore[import-untyped]

from ._regexp_cost import MAX_COMPILE_STEPS, SearchCost, children, compile_steps

__all__ = [
    "MATCH_TIMEOUT",
    "MAX_GROUPS",
    "MAX_GUARDED_LENGTH",
    "REFERENCE_LENGTH",
    "SAFE_STEPS",
    "SAFE_STEPS_PER_CHAR",
    "GuardTimeout",
    "RegexpCheck",
    "check_regexp",
    "guarded_find",
    "parse_compilable",
]

try:  # the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c
    import sre_parse as _parser

#: Steps a plain ``re`` search may take at worst (the cost model's bound):
#: 20 ms at most (a step costs 1 to 4 ns: tests/test_regexp_cost.py).
SAFE_STEPS = 5_000_000
#: ...or this many per character of the text: a long text costs a linear
#: search anyway, and a regexp within this makes it at most 64 times that.
SAFE_STEPS_PER_CHAR = 64
#: Seconds a guarded search may take before its regexp is disabled. A send
#: runs every matching regexp; one slow regexp costs it this much, once.
MATCH_TIMEOUT = 0.02
#: Largest pattern once its counted repeats are unrolled: ``regex`` builds
#: that much when it compiles (``(?:a{3000}){3000}`` took it 4 s and 2 GB;
#: 100,000 takes it 35 ms, this about 10 ms).
MAX_UNROLLED = 30_000
#: Capturing groups a regexp may have: ``regex`` compiles them in a time
#: quadratic in their number (8,191 empty groups took it 800 ms, 1,000 take
#: it 14 ms); Ivy regexps have a handful.
MAX_GROUPS = 1000
#: Longest regexp the guarded engine may compile: ``regex`` takes up to 3 us
#: a character (alternations, classes, groups), 12 ms for this, where 16 Ki
#: characters took it 90 to 230 ms. A compile cannot be interrupted.
MAX_GUARDED_LENGTH = 4096
#: What a guarded search raises when it runs out of time.
GuardTimeout = TimeoutError

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}
#: Syntax that ``regex`` reads otherwise than ``re``: POSIX classes, fuzzy
#: constraints, possessive repeats.
_REGEX_ONLY = re.compile(r"\[\[?:|\{\s*[eisd]\s*[<=]|[*+?}]\+")


def _unrolled_size(items: Any) -> int:
    """What an engine that expands counted repeats (``regex`` does) would build."""
    size = 0
    for op, av in items:
        if op in _REPEATS:
            low, high, sub = av
            size += _unrolled_size(sub) * (low + 1 if high == _c.MAXREPEAT else high)
        else:
            size += 1 + sum(_unrolled_size(sub) for sub in children(op, av))
    return size


def parse_compilable(regexp: str) -> Any:
    """``regexp`` parsed, once its compile cost is known to be bounded.

    Raises:
      re.error: it does not parse.
      ValueError: compiling it would walk over :data:`MAX_COMPILE_STEPS`
        code points of classes (one such regexp held the loop 21 s).
    """
    parsed = _parser.parse(regexp)
    compiling = compile_steps(parsed)
    if compiling > MAX_COMPILE_STEPS:
        raise ValueError(
            f"regexp too costly to compile (character classes of {compiling} code points)"
        )
    return parsed


def _groups_at_most(regexp: str) -> int:
    """About as many capturing groups as ``regexp`` has, or more, counted
    before parsing (an escaped backslash before a group, or ``(`` in a
    class, counts wrong: hence the margin where it is used)."""
    opened = regexp.count("(") - regexp.count("\\(")
    return opened - regexp.count("(?") + regexp.count("(?P<")


class RegexpCheck(NamedTuple):
    """What :func:`check_regexp` found out about a regexp, before compiling it."""

    #: The longest text ``re`` may search with it (0: none).
    safe_length: int
    #: Its bound's steps a character of a text of :data:`REFERENCE_LENGTH`:
    #: what it adds to every send that runs it (a peer's regexps share a
    #: budget of them).
    steps_per_char: float
    #: ...and the steps its bound has on a text of one character past that
    #: rate: what a search costs whatever the text (``^(?:){300000}``: 1.8 M
    #: steps, 7 ms, counted 1,756 a character, so 113 of them fit a peer's
    #: budget and cost a send of two characters 366 ms, untimed).
    fixed_steps: float = 0.0


#: The text length at which a regexp's cost a character is taken (a long
#: Ivy message).
REFERENCE_LENGTH = 1024


def check_regexp(
    regexp: str, *, anchored: bool, longest: int, guard_groups: int | None = None
) -> RegexpCheck:
    """Refuse what would cost too much to compile; the longest text ``re`` may search.

    Args:
      regexp: a peer's regexp, not compiled yet.
      anchored: whether matching starts at the beginning of the text anyway
        (``match``/``fullmatch`` modes).
      longest: the longest text there is.
      guard_groups: a regexp with this many groups needs the guard for
        every text (safe length 0), whatever its bound.

    Returns:
      the longest text (up to ``longest``) whose search by ``re`` stays
      within :data:`SAFE_STEPS` steps, or :data:`SAFE_STEPS_PER_CHAR` a
      character (0 when even the empty text does not); and its steps a
      character.

    Raises:
      re.error: it does not parse.
      ValueError: it would cost too much to compile (classes over much of
        Unicode, over :data:`MAX_GROUPS` groups), or it needs the guarded
        engine and is too big for it (over :data:`MAX_GUARDED_LENGTH`
        characters, or counted repeats that would unroll past
        :data:`MAX_UNROLLED`).
    """
    if _groups_at_most(regexp) > 2 * MAX_GROUPS:  # (parsing them alone: 37 ms at 16 Ki)
        raise ValueError(f"regexp too costly to compile (over {MAX_GROUPS} groups)")
    parsed = parse_compilable(regexp)
    groups = parsed.state.groups - 1  # (group 0 is the whole match)
    if groups > MAX_GROUPS:
        raise ValueError(f"regexp too costly to compile ({groups} groups, over {MAX_GROUPS})")
    cost = SearchCost(parsed, anchored=anchored)
    if guard_groups is not None and groups >= guard_groups:
        safe_length = 0
    elif len(regexp) > MAX_GUARDED_LENGTH:  # all or nothing: one evaluation, no search
        safe_length = longest if cost.within(longest, SAFE_STEPS, SAFE_STEPS_PER_CHAR) else 0
    else:
        safe_length = cost.longest_within(SAFE_STEPS, SAFE_STEPS_PER_CHAR, longest)
    if safe_length < longest:  # the guarded engine will compile it, unrolled
        if len(regexp) > MAX_GUARDED_LENGTH:
            raise ValueError(
                f"regexp too big to match safely ({len(regexp)} characters that need"
                f" the guarded engine, over {MAX_GUARDED_LENGTH})"
            )
        size = _unrolled_size(parsed)
        if size > MAX_UNROLLED:
            raise ValueError(f"regexp too big to match safely (counted repeats of {size})")
    per_char = cost.steps(REFERENCE_LENGTH) / (REFERENCE_LENGTH + 1)
    return RegexpCheck(safe_length, per_char, max(0.0, cost.steps(1) - per_char))


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

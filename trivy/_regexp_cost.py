"""What a peer's regexp may cost us: compiling it, and one search, as bounds.

Every agent runs its peers' regexps on its own texts with Python's ``re``,
a backtracking engine. This module reads a parsed regexp and bounds, from
its structure alone:

- **the work of one search** on a text of ``n`` characters
  (:meth:`SearchCost.steps`), in engine steps (one step: one character
  or position tested, about a nanosecond). Each part of the pattern is
  described by its *ways* (how many different ways it can match at one
  place: the engine may try what follows it once per way) and its *cost*
  (the steps to try all of them). A sequence multiplies ways and charges
  each part once per way of what precedes it; an alternation adds; a
  repeat of ``m`` iterations (at most ``n + 1``: each one that consumes
  takes a character) raises its body's ways to the ``m``-th power, fixed
  or variable; a lookaround costs its body's whole exploration and has a
  single way; a backreference costs ``n``; a class costs its items. A
  search tries ``n + 1`` start positions unless anchored. The bound is
  worst case over texts, and monotone in ``n``.
- **the work of compiling it** (:func:`compile_steps`): ``re``'s compiler
  walks every code point of every range of a character class (a full
  Unicode range takes it ~2 ms, three times that under ``(?i)``), which
  3,200 such classes in one regexp turned into 20 s, and builds a table of
  the whole BMP for a class past Latin-1 or any range under ``(?i)``
  (~100 us each). The rest of compiling is linear in the regexp's length,
  which its own limit bounds.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ._regexp_chars import CharSet, Disjointness, char_set

__all__ = ["MAX_COMPILE_STEPS", "SearchCost", "children", "compile_steps"]

try:  # the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c

#: Code points ``re``'s compiler may walk for one regexp's classes: about
#: 10 ms of compiling (35 ns each; one full BMP range under ``(?i)`` fits).
MAX_COMPILE_STEPS = 250_000
#: ...counted this many times under IGNORECASE (each one case-folded)...
_FOLDED_WEIGHT = 3
#: ...plus this much for a class that needs a table of the whole BMP (a
#: character past Latin-1 in a class of several, or any range when case is
#: ignored: some letters fold past it): about 100 us each, whatever it
#: holds (three letters past Latin-1 took 85 us, and 3,270 such classes in a
#: regexp 270 ms).
_BIG_CLASS = 3000
_BMP = 0x10000

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_POSSESSIVE = getattr(_c, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)
_ONE_STEP = {_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.AT, _c.CATEGORY}


def compile_steps(parsed: Any) -> int:
    """Code points ``re``'s compiler walks for the classes of ``parsed``.

    ``parsed`` is what ``re._parser.parse`` returned. Each range of a class
    is walked up to the end of the BMP, three times over when case is
    ignored.
    """
    ignore_case = bool(parsed.state.flags & re.IGNORECASE)
    return _compile_steps(parsed, ignore_case)


def _compile_steps(items: Any, ignore_case: bool) -> int:
    steps = 0
    for op, av in items:
        if op is _c.IN:
            ranges = [item[1] for item in av if item[0] is _c.RANGE]
            width = sum(min(high, _BMP - 1) - low + 1 for low, high in ranges if low < _BMP)
            steps += len(av) + width * (_FOLDED_WEIGHT if ignore_case else 1)
            if (ranges and ignore_case) or (len(av) > 1 and _past_latin1(av)):
                steps += _BIG_CLASS
        elif op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            scoped = (ignore_case or bool(add_flags & re.IGNORECASE)) and not (
                del_flags & re.IGNORECASE
            )
            steps += _compile_steps(sub, scoped)
        else:
            steps += sum(_compile_steps(sub, ignore_case) for sub in children(op, av))
    return steps


def _past_latin1(items: Any) -> bool:
    """Whether a class holds a character past Latin-1 (a literal, or a range's end)."""
    return any(
        (op is _c.LITERAL and av > 0xFF) or (op is _c.RANGE and av[1] > 0xFF) for op, av in items
    )


def children(op: Any, av: Any) -> list[Any]:
    """The subpatterns inside one parsed item (other than a group's)."""
    if op in _REPEATS or op is _POSSESSIVE:
        return [av[2]]
    if op is _c.BRANCH:
        return list(av[1])
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [av[1]]
    if op is _ATOMIC:
        return [av]
    if op is _c.GROUPREF_EXISTS:
        return [sub for sub in av[1:] if sub is not None]
    if op is _c.SUBPATTERN:
        return [av[3]]
    return []


class SearchCost:
    """The bound on one search's steps for a regexp (see the module docstring).

    Args:
      parsed: what ``re._parser.parse`` returned for the regexp.
      anchored: whether a search starts at the beginning only (``match``
        or ``fullmatch``, or a leading ``^``).
    """

    def __init__(self, parsed: Any, *, anchored: bool) -> None:
        self._parsed = parsed
        self._flags: int = parsed.state.flags
        self._anchored = anchored or (len(parsed) > 0 and parsed[0] == (_c.AT, _c.AT_BEGINNING))
        # An unanchored search for a pattern that starts with literal
        # characters scans for them first (a tight loop), and tries the rest
        # only where they all are: at most once per period of that prefix.
        self._prefix = 0
        if not self._anchored and not self._flags & re.IGNORECASE:
            while self._prefix < len(parsed) and parsed[self._prefix][0] is _c.LITERAL:
                self._prefix += 1
        self._period = _period([av for _op, av in parsed[: self._prefix]])
        self._walk = _Walk(parsed.state.groups - 1)

    def steps(self, n: int) -> float:
        """The most steps one search on a text of ``n`` characters may take (inf: overflow)."""
        if self._prefix:
            _ways, rest, _tail = _sequence(self._parsed[self._prefix :], n, self._flags, self._walk)
            found = n // self._period + 1  # where the prefix can be, at most
            return n * _SCAN + found * (self._prefix + rest + _POSITION)
        _ways, cost, _tail = _sequence(self._parsed, n, self._flags, self._walk)
        positions = 1 if self._anchored else n + 1
        return positions * (cost + _POSITION)

    def longest_within(self, budget: float, per_char: float, longest: int) -> int:
        """The longest text (up to ``longest``) whose search is within bounds.

        A search of ``n`` characters is within bounds when it takes at most
        ``budget`` steps, or ``per_char`` steps a character: a linear cost
        is the price of a long text, whatever the regexp.
        """
        if self.within(longest, budget, per_char):  # (the common case: one evaluation)
            return longest
        # Up from 1 first: a regexp that needs the guard is usually safe for
        # a few characters only, so this takes a few evaluations where a
        # search from the middle took 20 (74 ms for a regexp of 4 Ki).
        low, high = -1, 1  # within at low (or low < 0), over at high once found
        while high < longest and self.within(high, budget, per_char):
            low, high = high, 2 * high
        high = min(high, longest)
        while high - low > 1:
            middle = (low + high) // 2
            if self.within(middle, budget, per_char):
                low = middle
            else:
                high = middle
        return max(low, 0)

    def within(self, n: int, budget: float, per_char: float) -> bool:
        """Whether a search of ``n`` characters is within bounds (see :meth:`longest_within`)."""
        return self.steps(n) <= max(budget, per_char * n)


def _period(literals: list[int]) -> int:
    """The shortest period of ``literals`` (its length if none): linear, by KMP.

    (Comparing the slices for each candidate period was quadratic: 16 Ki
    literals took 370 ms.)
    """
    border = [0] * len(literals)  # longest proper border of literals[: i + 1]
    k = 0
    for i in range(1, len(literals)):
        while k and literals[i] != literals[k]:
            k = border[k - 1]
        if literals[i] == literals[k]:
            k += 1
        border[i] = k
    return len(literals) - border[-1] if literals else 0


class _Walk:
    """What evaluating one regexp's bound keeps from one length to the next.

    The sets of its single-character items and which are disjoint depend on
    the regexp only: computed once (by the items' identities: the parsed
    regexp keeps them alive), within one budget (see
    :class:`~trivy._regexp_chars.Disjointness`), however many lengths
    :meth:`SearchCost.longest_within` tries.
    """

    __slots__ = ("disjoint", "marks", "sets")

    def __init__(self, groups: int) -> None:
        #: Marks the engine may save at once: two a capturing group.
        self.marks = 2 * groups
        self.sets: dict[tuple[Any, int, int], CharSet | None] = {}
        self.disjoint = Disjointness()

    def char_set(self, op: Any, av: Any, flags: int) -> CharSet | None:
        key = (op, id(av), flags)
        if key not in self.sets:
            self.sets[key] = char_set(op, av, flags)
        return self.sets[key]


#: (ways, cost, tail): how many ways an item can match at one place, the
#: steps to try them all, and, when all its ways come from a final repeat of
#: one character, that character's set (else None).
_Bound = tuple[float, float, "CharSet | None"]
#: Steps a way spends on the next item's first character when it fails there.
_FIRST_TEST = 2.0
#: What the engine's bookkeeping costs, in steps: a capturing group (its two
#: marks), a lookaround or atomic group (a nested match), an iteration of a
#: repeat of more than one character (its counter and marks), a start
#: position of a search. Measured: tests/test_regexp_cost.py.
_MARKS = 4.0
_NESTED = 10.0
_ITERATION = 6.0
_POSITION = 4.0
#: A character passed over by the scan for a literal prefix.
_SCAN = 0.5
_ONE_CHAR = {_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN}


def _sequence(items: Any, n: int, flags: int, walk: _Walk, saved: int = 0) -> _Bound:
    """The bound of matching ``items`` one after the other at one place.

    Each item is tried once per way of what precedes it; but after a repeat
    of characters disjoint from an item's first character, only one of the
    repeat's ways gets past that character (the way that ended where the
    repeat's characters did), so the rest cost a failed first test each.
    ``saved``: the marks the engine saves at each choice here (inside a
    repeat of more than one character; else 0).
    """
    ways, cost = 1.0, 0.0
    before = 1.0  # the ways of what precedes the previous item
    tail: CharSet | None = None
    for op, av in items:
        if tail is None and op in _ONE_STEP:  # (the common case, kept short)
            cost += ways
            before = ways
            continue
        item_ways, item_cost, item_tail = _item(op, av, n, flags, walk, saved)
        first = _first(op, av, flags, walk) if tail is not None else None
        if first is not None and tail is not None and walk.disjoint(tail, first):
            cost += ways * _FIRST_TEST + before * item_cost
            ways = before
        elif item_cost:  # (inf ways times nothing is nothing, not NaN)
            cost += ways * item_cost
        before = ways
        ways *= item_ways
        tail = item_tail
    return ways, cost, (tail if before <= 1.0 else None)


def _item(op: Any, av: Any, n: int, flags: int, walk: _Walk, saved: int) -> _Bound:
    if op in _ONE_STEP:
        return 1.0, 1.0, None
    if op is _c.IN:
        return 1.0, float(len(av)), None
    if op is _c.SUBPATTERN:
        ways, cost, tail = _sequence(av[3], n, _scoped(flags, av), walk, saved)
        return ways, cost + (_MARKS if av[0] is not None else 0.0), tail
    if op is _c.BRANCH:  # (inside a repeat: the marks saved, and restored per alternative)
        ways, cost = 0.0, 1.0 + saved
        for alternative in av[1]:
            alternative_ways, alternative_cost, _tail = _sequence(
                alternative, n, flags, walk, saved
            )
            ways += alternative_ways
            cost += alternative_cost + saved
        return ways, cost, None
    if op in _REPEATS or op is _POSSESSIVE:
        low, high, body = av
        simple = len(body) == 1 and body[0][0] in _ONE_CHAR  # (one character: a fast loop)
        # each iteration of a repeat of more than one character saves every
        # mark set so far (sre's MARK_PUSH: 199 empty groups made it 8 us
        # and 3 KB a character), and so does each choice inside it
        inside = saved if simple else walk.marks
        body_ways, body_cost, _tail = _sequence(body, n, flags, walk, inside)
        # each iteration that consumes takes a character; empty ones go on
        # to a counted repeat's count (an open one stops at the first)
        if body.getwidth()[0] > 0 or high == _c.MAXREPEAT:
            high = min(high, n + 1)
        body_cost += inside if simple else _ITERATION + inside
        ways, cost = _repeat(low, high, body_ways, body_cost)
        if op is _POSSESSIVE:
            return 1.0, cost, None
        tail = None
        if len(body) == 1 and high > low:
            body_op, body_av = body[0]
            tail = walk.char_set(body_op, body_av, flags)
        return ways, cost, tail
    if op in (_c.ASSERT, _c.ASSERT_NOT):  # explored in full, one way
        return 1.0, _NESTED + saved + _sequence(av[1], n, flags, walk, saved)[1], None
    if op is _ATOMIC:
        return 1.0, _NESTED + saved + _sequence(av, n, flags, walk, saved)[1], None
    if op is _c.GROUPREF:
        return 1.0, float(n + 1), None
    if op is _c.GROUPREF_EXISTS:
        ways, cost = 0.0, 1.0 + saved
        for branch in av[1:]:
            branch_ways, branch_cost, _tail = (
                _sequence(branch, n, flags, walk, saved) if branch is not None else (1.0, 0.0, None)
            )
            ways += branch_ways
            cost += branch_cost
        return ways, cost, None
    return 1.0, 1.0, None  # (anything else tests one position)


def _first(op: Any, av: Any, flags: int, walk: _Walk) -> CharSet | None:
    """The set the first character an item consumes is in (None: not known, or none)."""
    if op is _c.SUBPATTERN:
        sub = av[3]
        if not len(sub):
            return None
        first_op, first_av = sub[0]
        return _first(first_op, first_av, _scoped(flags, av), walk)
    if op in _REPEATS or op is _POSSESSIVE:
        low, _high, body = av
        if low < 1 or not len(body):
            return None
        first_op, first_av = body[0]
        return _first(first_op, first_av, flags, walk)
    return walk.char_set(op, av, flags)


def _scoped(flags: int, group: Any) -> int:
    """The flags inside a group: ``(?i:...)`` adds, ``(?-i:...)`` removes."""
    _number, add_flags, del_flags, _sub = group
    scoped: int = (flags | add_flags) & ~del_flags
    return scoped


def _repeat(low: int, high: int, body_ways: float, body_cost: float) -> tuple[float, float]:
    """(ways, cost) of ``low`` to ``high`` (tried at most) iterations of a body."""
    tried = high
    first = min(low, tried)
    if body_ways <= 1.0:
        return float(tried - first + 1), tried * body_cost + 1.0
    # every way of j iterations tries the body once more: sum of ways**j, j < tried
    cost = body_cost * _geometric(body_ways, 0, tried - 1) + 1.0
    return _geometric(body_ways, first, tried), cost


def _geometric(ratio: float, first: int, last: int) -> float:
    """ratio**first + ... + ratio**last (0 when last < first), inf past a float."""
    if last < first:
        return 0.0
    if ratio == math.inf:  # (the formula would take inf from inf: NaN)
        return math.inf if last > 0 else 1.0
    try:
        return (ratio ** (last + 1) - ratio**first) / (ratio - 1.0)
    except OverflowError:
        return math.inf

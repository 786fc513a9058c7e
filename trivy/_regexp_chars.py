"""Which characters one regexp item may match, to tell sets that never meet.

The cost model (:mod:`trivy._regexp_cost`) needs one fact about character
sets: whether two are disjoint. ``(\\S+) `` is the common case: the repeat
can end in many places, but only where it ends because the next character
is not ``\\S`` can the space match, so at most one of its ways goes on.
Being sound matters more than being complete here: when in doubt (a letter
under ``(?i)``, two classes that are both infinite and not known apart, a
question past its budget), sets are taken as overlapping.

A peer chooses the classes, so telling two apart must cost little whatever
they are: a set keeps its characters as sorted ranges (never one by one),
two sets of ranges are compared in one merge, and testing characters one
by one stops at :data:`MAX_TESTS` for the whole regexp (a class of 50,000
listed characters against 150 ranges took 12 s).
"""

from __future__ import annotations

import bisect
import re
from typing import Any

__all__ = ["MAX_TESTS", "CharSet", "Disjointness", "char_set"]

try:  # the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c

#: A set of more characters than this is never tested one by one.
_MAX_LISTED = 256
#: Characters tested one by one, for all the questions about one regexp
#: (about a microsecond each): past it, sets are taken as overlapping.
MAX_TESTS = 4096
_CATEGORIES = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}
#: Categories known never to share a character, both under the same flags
#: (Unicode ``\w`` and ASCII ``\W`` share every letter past ASCII).
_DISJOINT = {
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_DIGIT}),
    frozenset({_c.CATEGORY_SPACE, _c.CATEGORY_NOT_SPACE}),
    frozenset({_c.CATEGORY_WORD, _c.CATEGORY_NOT_WORD}),
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_SPACE}),
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_WORD}),
    frozenset({_c.CATEGORY_SPACE, _c.CATEGORY_WORD}),
}

_Ranges = tuple[tuple[int, int], ...]


class CharSet:
    """The characters one item may match: ranges, categories, maybe negated.

    Attributes:
      ranges: sorted disjoint ``(low, high)`` code point ranges.
      tests: compiled categories (``\\d``...), at most one of each.
      negate: the set is every character *not* in the ranges or categories.
      category: the one category the set is, if it is just that (``\\S``),
        with whether it is ASCII's: ``(category, ascii)``.
    """

    __slots__ = ("_lows", "category", "negate", "ranges", "tests")

    def __init__(
        self,
        ranges: _Ranges = (),
        tests: tuple[re.Pattern[str], ...] = (),
        *,
        negate: bool = False,
        category: Any = None,
    ) -> None:
        self.ranges = ranges
        self._lows = [low for low, _high in ranges]
        self.tests = tests
        self.negate = negate
        self.category = category

    @property
    def plain(self) -> bool:
        """Whether the set is just its ranges (no category, not negated)."""
        return not self.tests and not self.negate

    def size(self) -> int:
        """How many characters a plain set holds."""
        return sum(high - low + 1 for low, high in self.ranges)

    def contains(self, code: int) -> bool:
        """Whether the character of code point ``code`` is in the set."""
        at = bisect.bisect_right(self._lows, code) - 1
        inside = at >= 0 and code <= self.ranges[at][1]
        if not inside and self.tests:
            char = chr(code)
            inside = any(test.fullmatch(char) is not None for test in self.tests)
        return inside != self.negate

    def codes(self) -> Any:
        """Every code point of a plain set, in order."""
        for low, high in self.ranges:
            yield from range(low, high + 1)


class Disjointness:
    """Whether two sets are disjoint, for one regexp: cached, and within a budget.

    Its answers are kept by the sets' identities: the caller keeps the sets
    (see :mod:`trivy._regexp_cost`), so each pair costs its work once.
    """

    def __init__(self, budget: int = MAX_TESTS) -> None:
        #: Characters that may still be tested one by one.
        self.budget = budget
        self._known: dict[tuple[int, int], bool] = {}

    def __call__(self, one: CharSet, other: CharSet) -> bool:
        """Whether no character is in both (False when that cannot be told)."""
        key = (id(one), id(other))
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = self._disjoint(one, other)
        return known

    def _disjoint(self, one: CharSet, other: CharSet) -> bool:
        if one.plain and other.plain:
            return _ranges_disjoint(one.ranges, other.ranges)
        if not one.plain:
            one, other = other, one
        if one.plain and one.size() <= min(_MAX_LISTED, self.budget):
            self.budget -= one.size()
            return not any(other.contains(code) for code in one.codes())
        mine, theirs = one.category, other.category
        return (
            mine is not None
            and theirs is not None
            and mine[1] == theirs[1]  # (under different flags: never told apart)
            and frozenset({mine[0], theirs[0]}) in _DISJOINT
        )


def _ranges_disjoint(one: _Ranges, other: _Ranges) -> bool:
    """Whether two sorted lists of disjoint ranges share no code point (one merge)."""
    i = j = 0
    while i < len(one) and j < len(other):
        (low, high), (other_low, other_high) = one[i], other[j]
        if high < other_low:
            i += 1
        elif other_high < low:
            j += 1
        else:
            return False
    return True


def char_set(op: Any, av: Any, flags: int) -> CharSet | None:
    """The set of one single-character item (None: not one, or not understood).

    Under IGNORECASE a set holding a cased letter is not understood: case
    folding has exceptions (the Kelvin sign is a ``k``) not worth modelling.
    """
    if op is _c.LITERAL:
        return _checked(CharSet(((av, av),)), flags)
    if op is _c.IN:
        return _in(av, flags)
    if op is _c.ANY:
        return CharSet(() if flags & re.DOTALL else ((10, 10),), negate=True)
    if op is _c.NOT_LITERAL:
        if flags & re.IGNORECASE and chr(av).lower() != chr(av).upper():
            return None
        return CharSet(((av, av),), negate=True)
    return None


def _checked(chars: CharSet, flags: int) -> CharSet | None:
    """``chars``, unless case is ignored and it may hold a cased letter."""
    if not flags & re.IGNORECASE or not chars.ranges:
        return chars
    if sum(high - low + 1 for low, high in chars.ranges) > _MAX_LISTED:
        return None
    for low, high in chars.ranges:
        for code in range(low, high + 1):
            if chr(code).lower() != chr(code).upper():
                return None
    return chars


def _merged(ranges: list[tuple[int, int]]) -> _Ranges:
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for low, high in ranges:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)


def _in(items: Any, flags: int) -> CharSet | None:
    negate = bool(items) and items[0][0] is _c.NEGATE
    items = items[1:] if negate else items
    ranges: list[tuple[int, int]] = []
    categories: dict[Any, re.Pattern[str]] = {}
    for op, av in items:
        if op is _c.LITERAL:
            ranges.append((av, av))
        elif op is _c.RANGE:
            ranges.append(av)
        elif op is _c.CATEGORY and av in _CATEGORIES:
            if av not in categories:  # (each at most once: a test per character tested)
                categories[av] = re.compile(_CATEGORIES[av], flags & re.ASCII)
        else:
            return None
    chars = _checked(CharSet(_merged(ranges)), flags)
    if chars is None:
        return None
    only = None
    if len(categories) == 1 and not chars.ranges:
        only = (next(iter(categories)), bool(flags & re.ASCII))
    return CharSet(
        chars.ranges,
        tuple(categories.values()),
        negate=negate,
        category=None if negate else only,
    )

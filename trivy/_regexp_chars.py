"""Which characters one regexp item may match, to tell sets that never meet.

The cost model (:mod:`trivy._regexp_cost`) needs one fact about character
sets: whether two are disjoint. ``(\\S+) `` is the common case: the repeat
can end in many places, but only where it ends because the next character
is not ``\\S`` can the space match, so at most one of its ways goes on.
Being sound matters more than being complete here: when in doubt (a letter
under ``(?i)``, two classes that are both infinite and not known apart),
sets are taken as overlapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["CharSet", "char_set"]

try:  # the parser behind re.compile
    from re import _constants as _c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c

#: A class with more characters than this counts as infinite (no list of them).
_MAX_LISTED = 256
_CATEGORIES = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}
#: Categories known never to share a character (either flag set).
_DISJOINT = {
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_DIGIT}),
    frozenset({_c.CATEGORY_SPACE, _c.CATEGORY_NOT_SPACE}),
    frozenset({_c.CATEGORY_WORD, _c.CATEGORY_NOT_WORD}),
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_SPACE}),
    frozenset({_c.CATEGORY_DIGIT, _c.CATEGORY_NOT_WORD}),
    frozenset({_c.CATEGORY_SPACE, _c.CATEGORY_WORD}),
}


class CharSet:
    """The characters one item may match: listed when few, tested always.

    Attributes:
      listed: every character of the set, when there are few (else None).
      category: the one category the set is, if it is just that (``\\S``).
    """

    __slots__ = ("category", "contains", "listed")

    def __init__(
        self,
        contains: Callable[[str], bool],
        listed: frozenset[str] | None = None,
        category: Any = None,
    ) -> None:
        self.contains = contains
        self.listed = listed
        self.category = category

    def disjoint(self, other: CharSet) -> bool:
        """Whether no character is in both (False when that cannot be told)."""
        if self.listed is not None:
            return not any(other.contains(char) for char in self.listed)
        if other.listed is not None:
            return not any(self.contains(char) for char in other.listed)
        return frozenset({self.category, other.category}) in _DISJOINT


def char_set(op: Any, av: Any, flags: int) -> CharSet | None:
    """The set of one single-character item (None: not one, or not understood).

    Under IGNORECASE a set holding a cased letter is not understood: case
    folding has exceptions (the Kelvin sign is a ``k``) not worth modelling.
    """
    if op is _c.LITERAL:
        return _listed(frozenset(chr(av)), flags)
    if op is _c.IN:
        return _in(av, flags)
    if op is _c.ANY:
        dotall = bool(flags & re.DOTALL)
        return CharSet(lambda char: dotall or char != "\n")
    if op is _c.NOT_LITERAL:
        excluded = chr(av)
        if flags & re.IGNORECASE and excluded.lower() != excluded.upper():
            return None
        return CharSet(lambda char: char != excluded)
    return None


def _listed(chars: frozenset[str], flags: int) -> CharSet | None:
    if flags & re.IGNORECASE and any(char.lower() != char.upper() for char in chars):
        return None
    return CharSet(chars.__contains__, chars)


def _in_range(low: int, high: int) -> Callable[[str], bool]:
    return lambda char: low <= ord(char) <= high


def _in_category(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda char: pattern.fullmatch(char) is not None


def _in(items: Any, flags: int) -> CharSet | None:
    negate = bool(items) and items[0][0] is _c.NEGATE
    items = items[1:] if negate else items
    chars: set[str] = set()
    tests: list[Callable[[str], bool]] = []
    categories = []
    for op, av in items:
        if op is _c.LITERAL:
            chars.add(chr(av))
        elif op is _c.RANGE:
            low, high = av
            if high - low < _MAX_LISTED:
                chars.update(map(chr, range(low, high + 1)))
            else:
                if flags & re.IGNORECASE:
                    return None
                tests.append(_in_range(low, high))
        elif op is _c.CATEGORY and av in _CATEGORIES:
            tests.append(_in_category(re.compile(_CATEGORIES[av], flags & re.ASCII)))
            categories.append(av)
        else:
            return None
    if flags & re.IGNORECASE and any(char.lower() != char.upper() for char in chars):
        return None
    frozen = frozenset(chars)

    def contains(char: str) -> bool:
        inside = char in frozen or any(test(char) for test in tests)
        return inside != negate

    if not tests and not negate:
        return CharSet(contains, frozen)
    only = categories[0] if len(categories) == 1 and len(tests) == 1 and not chars else None
    return CharSet(contains, None, None if negate else only)

"""Kinds and fields by the user's regexp (``--kinds``), beside the first word.

A text the regexp matches belongs to the kind its group ``kind`` captured
(or its first group, or the whole match); its fields are the regexp's
other named groups, in order, and plotted by name. A text it does not
match is grouped by its first word, as always. The regexp is the user's,
but the texts are the bus's: each search has a time limit, and a search
that runs out is counted and the text grouped by its first word.
"""

from __future__ import annotations

import math

import regex  # type: ignore[import-untyped]

__all__ = ["MATCH_TIMEOUT", "Grouping"]

#: Seconds one search may take.
MATCH_TIMEOUT = 0.005


def number(text: str | None) -> float | None:
    """The finite number ``text`` reads as, if it does."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Grouping:
    """A user's regexp for kinds and fields (see the module's docstring).

    Raises:
      ValueError: the regexp does not compile.
    """

    def __init__(self, pattern: str, max_fields: int) -> None:
        try:
            self.regexp = regex.compile(pattern)
        except regex.error as exc:
            raise ValueError(f"bad --kinds regexp {pattern!r}: {exc}") from None
        groups: dict[str, int] = self.regexp.groupindex
        ordered = sorted(groups, key=groups.__getitem__)
        self.fields = [name for name in ordered if name != "kind"][:max_fields]
        self._kind: str | int = "kind" if "kind" in groups else (1 if self.regexp.groups else 0)
        #: Searches that ran out of time.
        self.timeouts = 0

    def split(self, text: str) -> tuple[str, tuple[float | None, ...]] | None:
        """The kind and the fields' values of ``text``, or ``None`` (not matched)."""
        try:
            found = self.regexp.search(text, timeout=MATCH_TIMEOUT)
        except TimeoutError:
            self.timeouts += 1
            return None
        if found is None:
            return None
        kind = found.group(self._kind) or ""
        return kind, tuple(number(found.group(name)) for name in self.fields)

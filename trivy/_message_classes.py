"""ivy-c's message filters: the classes of texts we send, and peers' regexps that fit.

An agent that declares the message classes it sends (the first words of
its texts: ``TRACK``, ``STATUS``...) can ignore the peers' regexps that
could never match any of them: they are not compiled and cost nothing on
each send. The rule is ivy-c's (``IvySetFilter``):

- no classes declared: every regexp is used;
- a regexp that starts with ``^`` and a literal word (letters, digits,
  ``_``, ``-``) is used only if that word begins some class: ``^TRA.*``
  fits ``TRACK``, ``^TRACKS`` does not;
- any other regexp is used (nothing can be told from it).

Changes apply to regexps that arrive afterwards, as in ivy-c: declare the
classes before peers come (the ``message_classes`` option).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["MessageClasses", "check_class"]

_WORD = re.compile(r"[A-Za-z0-9_-]+")
_LEADING_WORD = re.compile(r"\^([A-Za-z0-9_-]+)")


def check_class(word: str) -> str:
    """``word`` if it is a valid class word.

    Raises:
      ValueError: empty, or not only ASCII letters, digits, ``_`` and ``-``.
    """
    if not isinstance(word, str) or not _WORD.fullmatch(word):
        raise ValueError(f"a message class is a word of letters, digits, _ or -: {word!r}")
    return word


class MessageClasses:
    """The message classes an agent declared (``bus.message_classes``).

    Iterable, sized, and supports ``in``; :meth:`set`, :meth:`add` and
    :meth:`remove` change it for the regexps peers subscribe with from then
    on (ivy-c's ``IvySetFilter``, ``IvyAddFilter``, ``IvyRemoveFilter``).
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._words: dict[str, None] = {}
        self.set(words)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._words))

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._words

    def __repr__(self) -> str:
        return f"MessageClasses({list(self._words)!r})"

    def set(self, words: Iterable[str]) -> None:
        """Replace the classes (an empty list: no filtering).

        Raises:
          ValueError: a word is not valid (nothing is changed).
        """
        checked = [check_class(word) for word in ([words] if isinstance(words, str) else words)]
        self._words = dict.fromkeys(checked)

    def add(self, word: str) -> None:
        """Declare one more class."""
        self._words[check_class(word)] = None

    def remove(self, word: str) -> None:
        """Forget a class (no error if it was not declared)."""
        self._words.pop(word, None)

    def admits(self, regexp: str) -> bool:
        """Whether a peer's ``regexp`` could match a text of our classes."""
        if not self._words:
            return True
        leading = _LEADING_WORD.match(regexp)
        if leading is None:
            return True
        token = leading[1]
        return any(word.startswith(token) for word in self._words)

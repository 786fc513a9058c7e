"""PCRE's POSIX character classes (``[[:alpha:]]``), in the syntax of ``re``.

ivy-c programs subscribe with PCRE regexps, and PCRE reads ``[:alpha:]``
inside brackets as a class; Python's ``re`` reads ``[[:alpha:]]`` as the set
of the characters ``[:alph`` followed by a literal ``]``, and matches the
wrong texts without a word. :func:`translate_posix_classes` rewrites each
class PCRE knows into the ranges PCRE gives it (ASCII, PCRE's default
without UCP); a class it does not know, and the negated ``[:^alpha:]``
(which a set of ``re`` cannot hold beside other items), raise ValueError,
and the regexp is refused with ERROR like any regexp we cannot honour.
"""

from __future__ import annotations

import re

__all__ = ["POSIX_CLASSES", "translate_posix_classes"]

#: What each POSIX class is in PCRE (ASCII), as the inside of an ``re`` set.
POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "ascii": "\\x00-\\x7f",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "word": "a-zA-Z0-9_",
    "xdigit": "0-9A-Fa-f",
}
_CLASS = re.compile(r"\[:(\^?)([a-z]*):\]")


def translate_posix_classes(regexp: str) -> str:
    """``regexp`` with each ``[:name:]`` inside brackets as ``re`` reads it.

    Returns ``regexp`` itself when it has none (the common case: one search).

    Raises:
      ValueError: an unknown class, or a negated one (``[:^alpha:]``).
    """
    if "[:" not in regexp:
        return regexp
    out: list[str] = []
    position = 0
    in_set = False
    length = len(regexp)
    while position < length:
        char = regexp[position]
        if char == "\\":  # an escape, in or out of a set: kept whole
            out.append(regexp[position : position + 2])
            position += 2
            continue
        if not in_set:
            if char == "[":
                in_set = True
                out.append(char)
                position += 1
                # a "]" (after an optional "^") first in a set is a literal
                if regexp.startswith("^", position):
                    out.append("^")
                    position += 1
                if regexp.startswith("]", position):
                    out.append("]")
                    position += 1
                continue
            out.append(char)
            position += 1
            continue
        found = _CLASS.match(regexp, position) if char == "[" else None
        if found is not None:
            negated, name = found.groups()
            if name not in POSIX_CLASSES:
                raise ValueError(f"unknown POSIX class [:{negated}{name}:]")
            if negated:
                raise ValueError(f"a negated POSIX class ([:^{name}:]) is not supported")
            out.append(POSIX_CLASSES[name])
            position = found.end()
            continue
        if char == "]":
            in_set = False
        out.append(char)
        position += 1
    return "".join(out)

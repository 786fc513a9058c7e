"""ivy-c programs' POSIX classes (``[[:alpha:]]``) match as PCRE matches them.

``re`` alone read ``[[:alpha:]]`` as a set of ``[:alph`` and a literal
``]``: an ivy-c peer subscribing with it silently got the wrong texts.
"""

from __future__ import annotations

import re
import string

import pytest
import trio

import trivy
from trivy._posix_classes import POSIX_CLASSES, translate_posix_classes
from trivy.testing import RawPeer, wait_for_subscription

TIMEOUT = 10


@pytest.mark.parametrize(
    ("pcre", "matches", "misses"),
    [
        ("^[[:alpha:]]+$", ["abcXYZ"], ["a]", "abc1", "é"]),
        ("^[[:digit:][:space:]]+$", ["1 2\t3"], ["1a", ":"]),
        ("^[^[:alnum:]]+$", ["!? -"], ["a", "0"]),
        ("^[]:[:upper:]]+$", ["A:]B"], ["a"]),
        ("^[[:punct:]]+$", [string.punctuation], ["a", " "]),
        ("^[[:xdigit:]]+$", ["09afAF"], ["g"]),
        (r"^\[[[:lower:]]\]$", ["[a]"], ["[A]"]),
    ],
)
def test_each_class_matches_what_pcre_matches(
    pcre: str, matches: list[str], misses: list[str]
) -> None:
    pattern = re.compile(translate_posix_classes(pcre))
    assert all(pattern.search(text) for text in matches), pattern.pattern
    assert not any(pattern.search(text) for text in misses), pattern.pattern


def test_every_class_pcre_knows_compiles_and_others_are_refused() -> None:
    for name in POSIX_CLASSES:
        re.compile(translate_posix_classes(f"[[:{name}:]]"))
    assert translate_posix_classes("^no (class)") == "^no (class)"
    with pytest.raises(ValueError, match="unknown POSIX class"):
        translate_posix_classes("[[:bogus:]]")
    with pytest.raises(ValueError, match="negated POSIX class"):
        translate_posix_classes("[[:^alpha:]]")


async def test_a_peer_with_posix_classes_gets_the_texts_pcre_would_give(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            await raw.handshake("IVYC", b"1 1\x02^word ([[:alpha:]]+)$\n1 2\x02^neg [[:^alpha:]]\n")
            error = await raw.line_starting(b"3 ")
            assert b"negated POSIX class" in error, error
            await wait_for_subscription(a, "IVYC", "^word ([[:alpha:]]+)$")
            assert await a.send("word a]") == 0  # re alone matched this
            assert await a.send("word abc") == 1
            assert await raw.line_starting(b"2 ") == b"2 1\x02abc\x03"
            await raw.aclose()

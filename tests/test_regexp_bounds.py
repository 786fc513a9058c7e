"""The red team's second round: what checking, compiling and saving marks cost.

- the cost model's own work is bounded whatever the classes (one regexp of
  1 Ki characters held it 12 s);
- each iteration of a repeat of more than one character saves every mark
  set so far, and the bound says so (199 empty groups made a search 8 us
  and 3 KB a character, untimed);
- a regexp with too many groups, or too long for the guarded engine to
  compile quickly, is refused before anything compiles it.
"""

from __future__ import annotations

import re
import time
from re import _parser  # type: ignore[attr-defined]

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivy import _regexp_guard
from trivy._matching import MANY_GROUPS, NoMoreGuarded, RegexpEntry, compile_uncached
from trivy._regexp_chars import Disjointness, char_set
from trivy._regexp_cost import SearchCost, _period
from trivy._regexp_guard import (
    MAX_GROUPS,
    MAX_GUARDED_LENGTH,
    SAFE_STEPS_PER_CHAR,
    check_regexp,
)

LONGEST = 1024 * 1024


def _ranges(start: int, width: int) -> str:
    parts, code = [], start
    while code < start + width:
        high = min(code + 254, start + width - 1)
        parts.append(f"{chr(code)}-{chr(high)}")
        code = high + 1
    return "".join(parts)


def test_checking_a_regexp_of_many_listed_characters_is_quick() -> None:
    # 50,000 characters above the BMP, then 150 wide ranges holding none
    wide = "".join(f"{chr(0xF0000 + i)}-{chr(0xF0101 + i)}" for i in range(150))
    regexp = f"[{_ranges(0x20000, 50_000)}]*[{wide}]"
    started = time.thread_time()
    check_regexp(regexp, anchored=False, longest=LONGEST)
    assert time.thread_time() - started < 1.0  # 12.5 s before; a few ms now


def _set(regexp: str) -> object:
    ((op, av),) = _parser.parse(regexp)
    return char_set(op, av, 0)


@pytest.mark.parametrize(
    ("one", "other", "disjoint"),
    [
        ("[a-z]", "[0-9]", True),
        ("[a-z]", r"\d", True),
        ("[^a]", "a", True),
        (".", "\n", True),
        (r"\S", " ", True),
        (r"\d", r"\D", True),
        ("[a-z]", "[m-p]", False),
        (f"[{chr(0x20000)}-{chr(0x2FFFF)}]", f"[{chr(0x2F000)}-{chr(0x30000)}]", False),
        (f"[{chr(0x20000)}-{chr(0x2FFFF)}]", f"[{chr(0x30000)}-{chr(0x3FFFF)}]", True),
        ("[^a]", "[^b]", False),
    ],
)
def test_disjoint_sets(one: str, other: str, disjoint: bool) -> None:
    sets = _set(one), _set(other)
    assert Disjointness()(*sets) is disjoint  # type: ignore[arg-type]
    assert Disjointness()(*reversed(sets)) is disjoint  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("one", "other"), [(r"\w", r"\W"), (r"\d", r"\W"), (r"\s", r"\S"), (r"\D", r"\d")]
)
def test_categories_under_different_flags_are_not_told_apart(one: str, other: str) -> None:
    """The first under Unicode's flag, the second under ASCII's: they share
    characters past ASCII (a letter is Unicode's \\w and ASCII's \\W)."""
    ((op, av),), ((other_op, other_av),) = _parser.parse(one), _parser.parse(other)
    sets = char_set(op, av, 0), char_set(other_op, other_av, re.ASCII)
    assert Disjointness()(*sets) is False  # type: ignore[arg-type]
    assert Disjointness()(*reversed(sets)) is False  # type: ignore[arg-type]


def test_past_its_budget_a_set_is_taken_as_overlapping() -> None:
    sets = _set("[a-z]"), _set(r"\d")
    assert Disjointness(budget=25)(*sets) is False  # type: ignore[arg-type]
    assert Disjointness(budget=26)(*sets) is True  # type: ignore[arg-type]


@given(st.lists(st.sampled_from([1, 2, 3]), max_size=30))
def test_the_period_of_a_prefix(literals: list[int]) -> None:
    naive = next(
        (p for p in range(1, len(literals)) if literals[p:] == literals[:-p]), len(literals)
    )
    assert _period(literals) == naive


_GROUPS = "()" * 199


@pytest.mark.parametrize(
    "regexp",
    [
        f"^{_GROUPS}(?:.(?=))*z",
        f"^{_GROUPS}(?:(?!ab|cd|ef|gh).)*z",
        f"^(?#1234){_GROUPS}(?:.(?=))*z",
        f"^{_GROUPS}(?:x|yy)*z",
        f"^{_GROUPS}(?:[xy]z?)*z",
    ],
)
def test_marks_saved_at_each_iteration_are_in_the_bound(regexp: str) -> None:
    text = "x" * 20_000  # (20 ms at 1 us a character: 160 ms before)
    bound = SearchCost(_parser.parse(regexp), anchored=False).steps(len(text))
    pattern = compile_uncached(regexp)
    took = min(_took(pattern, text) for _ in range(2))
    assert took <= 200e-6 + bound * 20e-9, (took, bound)  # 20 ns a step, as test_regexp_cost
    # and so such a regexp is no longer run by re on long texts, untimed
    check = check_regexp(regexp, anchored=False, longest=LONGEST)
    assert check.safe_length < LONGEST
    assert check.steps_per_char > SAFE_STEPS_PER_CHAR


def _took(pattern: re.Pattern[str], text: str) -> float:
    started = time.thread_time()
    pattern.search(text)
    return time.thread_time() - started


def test_ordinary_regexps_with_groups_stay_on_re() -> None:
    for regexp in [r"^foo (\S+) (\d+)", r"^(\w+)=(.*)$", r"^(?:ab)+ (x|y)"]:
        assert RegexpEntry(regexp, "search").guarded is False


def test_too_many_groups_are_refused_before_compiling() -> None:
    with pytest.raises(ValueError, match="groups"):
        check_regexp("()" * 8191, anchored=False, longest=LONGEST)  # 1 s a cycle before
    check_regexp("(a)" * MAX_GROUPS, anchored=False, longest=LONGEST)


def test_a_regexp_of_thousands_of_groups_is_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parsing 5,461 ``(|)`` alone took 37 ms: they are counted in the text first."""

    class NoParser:
        @staticmethod
        def parse(regexp: str) -> None:
            raise AssertionError("parsed")

    monkeypatch.setattr(_regexp_guard, "_parser", NoParser)
    for regexp in ("(|)" * 5461, "(?P<n>a)()" * 1100):
        with pytest.raises(ValueError, match="groups"):
            check_regexp(regexp, anchored=False, longest=LONGEST)


def test_many_groups_take_a_guard_slot_before_compiling() -> None:
    regexp = "(a)" * MANY_GROUPS
    assert RegexpEntry(regexp, "search").guarded
    with pytest.raises(NoMoreGuarded):  # before: guarded after compiling, past the cap
        RegexpEntry(regexp, "search", may_guard=False)


@pytest.mark.parametrize(
    "regexp",
    [
        "|".join(f"w{i:04d}" for i in range(2730)) + "(x+)+y",
        "()" * 199 + "a" * 15986,
        "(?i)" + "k" * 16000 + "(x+)+y",
        "(a)" + r"\1" * 8000,
    ],
)
def test_a_long_regexp_that_needs_the_guard_is_refused_before_compiling(regexp: str) -> None:
    assert len(regexp) > MAX_GUARDED_LENGTH
    with pytest.raises(ValueError, match="too big to match safely"):
        RegexpEntry(regexp, "search")


def test_a_long_regexp_that_needs_no_guard_is_taken() -> None:
    regexp = "^(?:" + "|".join(f"w{i:04d}" for i in range(2720)) + ")"
    assert len(regexp) > MAX_GUARDED_LENGTH
    assert RegexpEntry(regexp, "search").guarded is False
    shorter = "|".join(f"w{i:04d}" for i in range(600)) + "(x+)+y"  # (its last branch)
    assert len(shorter) <= MAX_GUARDED_LENGTH
    assert RegexpEntry(shorter, "search").guarded


def test_a_regexp_that_needs_the_guard_is_measured_in_a_few_evaluations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its safe length was searched from the middle of 1 Mi: 20 evaluations
    of its bound, 74 ms for a regexp of 3,900 characters, in one step."""
    from trivy._regexp_cost import SearchCost

    calls = []
    steps = SearchCost.steps

    def counted(self: SearchCost, n: int) -> float:
        calls.append(n)
        return steps(self, n)

    monkeypatch.setattr(SearchCost, "steps", counted)
    check = _regexp_guard.check_regexp(".*x" * 1300, anchored=False, longest=1024 * 1024)
    assert check.safe_length < 1024 * 1024
    assert len(calls) <= 8, calls

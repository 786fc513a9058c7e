"""The regexp cost model bounds what ``re`` really does (issue: bounds that hold).

A property test generates regexps from a grammar with every construct the
model reads (fixed and variable repeats, nested, lazy and possessive;
lookarounds; alternations; backreferences; classes small, huge, negated and
by category; case folding) and texts over a small alphabet that makes them
backtrack, and checks that ``re``'s search never takes more than
:data:`NS_PER_STEP` nanoseconds per step of the model's bound (plus a fixed
overhead). The same for compiling. It runs with a fixed seed in CI; a long
run: ``TRIVY_REGEXP_EXAMPLES=20000 python -m pytest tests/test_regexp_cost.py``.
"""

from __future__ import annotations

import os
import re
import time
from re import _parser  # type: ignore[attr-defined]

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from trivy._matching import compile_uncached
from trivy._regexp_cost import MAX_COMPILE_STEPS, SearchCost, compile_steps
from trivy._regexp_guard import SAFE_STEPS, check_regexp

#: What a step of the model may cost, at most: measured up to 4 ns (20,000
#: examples); the margin is for a slower or busier machine.
NS_PER_STEP = 20
#: What any search or compile costs on top (a call, the first allocation).
OVERHEAD = 200e-6
EXAMPLES = int(os.environ.get("TRIVY_REGEXP_EXAMPLES", "300"))
#: Searches the model bounds above this are not run (they would be slow
#: even when the bound is right).
MAX_TRIED_STEPS = 2e7

_ATOMS = st.sampled_from(
    [
        *("a", "b", ".", r"\d", r"\w", r"\s", r"\S", "[ab]", "[^a]", r"[a-z\d]", "x", " ", r"\W"),
        # categories under ASCII's flag beside Unicode's (which share letters
        # past ASCII), and characters past it
        *(r"(?a:\W)", r"(?a:\w)", r"(?a:\D)", r"(?a:\S)", r"[^\W\d]", "\u00e9"),
    ]
)


def _repeat(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    counts = st.one_of(
        st.sampled_from(["*", "+", "?", "*?", "+?", "++", "*+"]),
        st.integers(0, 1100).map(lambda k: f"{{{k}}}"),
        st.integers(0, 40).map(lambda k: f"{{{k},}}"),
        st.tuples(st.integers(0, 300), st.integers(0, 300)).map(lambda t: f"{{{min(t)},{max(t)}}}"),
    )
    return st.tuples(inner, counts).map(lambda t: f"(?:{t[0]}){t[1]}")


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _repeat(inner),
        st.lists(inner, min_size=2, max_size=4).map("".join),
        st.lists(inner, min_size=2, max_size=3).map(lambda alts: "(?:" + "|".join(alts) + ")"),
        inner.map(lambda r: f"({r})"),
        inner.map(lambda r: f"(?={r})"),
        inner.map(lambda r: f"(?!{r})"),
        inner.map(lambda r: f"(?>{r})"),
    )


_REGEXPS = st.recursive(_ATOMS, _combine, max_leaves=12)
#: A short piece, repeated: long texts that make the same choices again.
_TEXTS = st.tuples(
    st.text(alphabet="aab x1\u00e9\u0663\u00a0", max_size=12), st.integers(1, 400)
).map(lambda piece: piece[0] * piece[1])


def _search_time(pattern: re.Pattern[str], text: str) -> float:
    # CPU time of this thread: what the work costs, not what other
    # processes on a loaded machine take from it meanwhile
    best = float("inf")
    for _ in range(2):
        started = time.thread_time()
        pattern.search(text)
        best = min(best, time.thread_time() - started)
    return best


@seed(20261206)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    body=_REGEXPS,
    tail=st.sampled_from(["", "(?!)", "$", r"\1", "z"]),
    flags=st.sampled_from(["", "(?i)", "(?s)"]),
    text=_TEXTS,
)
def test_a_search_never_costs_more_than_the_model_says(
    body: str, tail: str, flags: str, text: str
) -> None:
    regexp = f"{flags}{body}{tail}"
    try:
        pattern = compile_uncached(regexp)
    except (re.error, RecursionError, OverflowError):
        return  # (a backreference to no group, a lookbehind of variable width...)
    bound = SearchCost(_parser.parse(regexp), anchored=False).steps(len(text))
    if bound > MAX_TRIED_STEPS:
        return
    took = _search_time(pattern, text)
    assert took <= OVERHEAD + bound * NS_PER_STEP * 1e-9, (regexp, text, took, bound)


@pytest.mark.parametrize(
    ("regexp", "text"),
    [  # the red team's regexps: each took seconds a send
        ("(?:(?=(?:(?=(?:(?=.{16}).){16}).){16}).){16}(?!)z0", "a" * 100),
        (".*.{1054}(?!)z0", "a" * 3162),
        ("(?:.{999}){100}(?!)", "a" * 200_000),
        # Unicode \w and ASCII \W were told apart: 24 letters past ASCII, 1.3 s
        (r"(?:\w*(?a:\W))*(?!)", "\u00e9" * 24),
        (r"(?:\d*(?a:\W))*(?!)", "\u0663" * 24),
        (r"(?:\s*(?a:\S))*(?!)", "\u00a0" * 24),
    ],
)
def test_the_red_teams_regexps_are_bounded_by_the_model(regexp: str, text: str) -> None:
    try:
        safe = check_regexp(regexp, anchored=False, longest=1024 * 1024).safe_length
    except ValueError as exc:  # refused outright: too big for the guarded engine
        assert "too big to match safely" in str(exc)
        return
    if len(text) <= safe:  # re may search it: then it is within the budget, measured
        took = _search_time(compile_uncached(regexp), text)
        assert took <= OVERHEAD + SAFE_STEPS * NS_PER_STEP * 1e-9
    else:
        assert SearchCost(_parser.parse(regexp), anchored=False).steps(len(text)) > SAFE_STEPS


_CLASSES = st.sampled_from(
    [
        *("[a-z]", "[\u0000-\uffff]", "[\u0100-\u0fff]", "[^\u0000-\u00ff]", r"[\w\s]", "[0-9]"),
        "k",
        # a few characters past Latin-1: a table of the whole BMP (85 us each)
        *("[\u0100\u0200\u0300]", "[\u0430\u0431\u0432k]"),
    ]
)


@seed(20261206)
@settings(max_examples=max(EXAMPLES // 10, 30), deadline=None)
@given(
    classes=st.lists(_CLASSES, min_size=1, max_size=120),
    flags=st.sampled_from(["", "(?i)"]),
)
def test_compiling_never_costs_more_than_the_model_says(classes: list[str], flags: str) -> None:
    regexp = flags + "".join(classes)
    steps = compile_steps(_parser.parse(regexp))
    took = float("inf")
    for _ in range(3):  # the least of three: a collection or a preemption only adds
        # A machine that slows down for a while (a shared VM: CPU time 10x
        # for a second) slows the reference compiled just before as much:
        # the time is counted in the machine's speed of the moment.
        slowdown = max(1.0, _compile_time(_REFERENCE) / _REFERENCE_MODEL)
        took = min(took, _compile_time(regexp) / slowdown)
    # 35 ns a step here; the rest of compiling is linear in the regexp's length
    assert took <= OVERHEAD + (steps * 35 + len(regexp) * 2_000) * 1e-9 * 4, (regexp, took, steps)


#: Compiled beside each regexp of the test above, to tell the machine's speed
#: (about half a millisecond: about its model's time, 35 ns a step).
_REFERENCE = "(?i)[\u0100-\u0fff]"
_REFERENCE_MODEL = compile_steps(_parser.parse(_REFERENCE)) * 35e-9


def _compile_time(regexp: str) -> float:
    started = time.thread_time()  # (CPU time, as _search_time)
    compile_uncached(regexp)
    return time.thread_time() - started


def test_a_regexp_too_costly_to_compile_is_refused_before_compiling() -> None:
    regexp = "(?i)" + "[\u0000-\uffff]" * 3200  # compiled for 20 s before
    started = time.perf_counter()
    with pytest.raises(ValueError, match="too costly to compile"):
        check_regexp(regexp, anchored=False, longest=1024)
    assert time.perf_counter() - started < 0.5
    assert compile_steps(_parser.parse("(?i)[\u0000-\uffff]")) <= MAX_COMPILE_STEPS  # one is fine


@pytest.mark.parametrize("regexp", ["(gone0(x+)+)+", "((x+)+)+y", "((a|b)+)+c"])
def test_a_count_past_a_float_stays_inf_however_long_the_text(regexp: str) -> None:
    """Nested repeats once counted NaN steps past 1,000 characters (inf less
    inf): every comparison with NaN is false, so the router never timed such
    a regexp's searches and their time escaped its peer's send budget."""
    cost = SearchCost(_parser.parse(regexp), anchored=False)
    counts = [cost.steps(n) for n in (1, 20, 1_000, 1_000_000)]
    assert counts == sorted(counts)  # never NaN (a NaN is not ordered)
    assert counts[-1] == float("inf")
    assert check_regexp(regexp, anchored=False, longest=1_000_000).steps_per_char == float("inf")

"""The peers' regexp table: modes, prefix index, subscription bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivy._matching import COSTLY_STEPS, RegexpTable, literal_prefix


@pytest.mark.parametrize(
    ("regexp", "anchored", "prefix"),
    [
        ("^hello (.*)", False, "hello "),
        ("hello (.*)", False, ""),
        ("hello (.*)", True, "hello "),
        ("^ab?c", False, "a"),
        ("^abc{2}", False, "ab"),
        ("^a|b", False, ""),
        ("^(?i)abc", False, ""),
        ("^a\\.b", False, "a"),
        ("^multi (a)?(b)?(c)?", False, "multi "),
    ],
)
def test_literal_prefix(regexp: str, anchored: bool, prefix: str) -> None:
    assert literal_prefix(regexp, anchored=anchored) == prefix


def matching(table: RegexpTable[str], text: str) -> set[str]:
    return {e.regexp for e in table.candidates(text) if e.find(text)}


def test_modes_differ_as_the_reference_peers_do() -> None:
    text = "this is unanchored text"
    for mode, delivers in [("search", True), ("match", False), ("fullmatch", False)]:
        table: RegexpTable[str] = RegexpTable(mode)  # type: ignore[arg-type]
        table.add("peer", 0, r"unanchored (\w+)")
        assert bool(matching(table, text)) is delivers, mode
    table = RegexpTable("fullmatch")
    table.add("peer", 0, r"this (.*)")
    assert matching(table, text) == {r"this (.*)"}
    table.add("peer", 1, r"this")
    assert matching(table, text) == {r"this (.*)"}


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="match mode"):
        RegexpTable("anywhere")  # type: ignore[arg-type]


def test_one_entry_per_distinct_regexp() -> None:
    table: RegexpTable[str] = RegexpTable()
    table.add("a", 0, "^x")
    table.add("b", 5, "^x")
    assert len(table) == 1
    (entry,) = table.candidates("x")
    assert list(entry.subscribers) == [("a", 0), ("b", 5)]
    table.remove("a", 0, "^x")
    table.remove("a", 0, "^x")  # twice: ignored
    table.remove("c", 1, "^nothing")  # unknown: ignored
    assert list(entry.subscribers) == [("b", 5)]
    table.remove("b", 5, "^x")
    assert len(table) == 0 and list(table.candidates("x")) == []


def test_an_entry_keeps_its_subscriptions_by_peer_too() -> None:
    """What is done once a peer (a search charged, one MSG more) loops over peers."""
    table: RegexpTable[str] = RegexpTable()
    for peer, sub_id in [("a", 0), ("b", 5), ("a", 1), ("a", 1)]:
        entry = table.add(peer, sub_id, "^x")
    assert entry.peers == {"a": {0: None, 1: None}, "b": {5: None}}
    assert table.subscriptions == 3
    table.remove("a", 0, "^x")
    table.remove("b", 5, "^x")
    assert entry.peers == {"a": {1: None}}
    assert list(entry.subscribers) == [("a", 1)]


regexps = st.sampled_from(
    ["^word", "^wo", "^w(o)?rd", "word", "^x|word", "(?i)^WORD", "^[a-z]+", "^wordy?", r"^\w"]
)


@given(
    st.lists(regexps, unique=True), st.sampled_from(["word", "wordy", "WORD", "x", "", "a word"])
)
def test_index_never_hides_a_match(patterns: list[str], text: str) -> None:
    """The prefix index is an optimisation only: same results as trying all."""
    import re

    table: RegexpTable[str] = RegexpTable()
    for i, pattern in enumerate(patterns):
        table.add("p", i, pattern)
    expected = {p for p in patterns if re.search(p, text)}
    assert matching(table, text) == expected


def test_the_table_bounds_the_characters_of_all_the_peers_regexps() -> None:
    table: RegexpTable[str] = RegexpTable("search", max_characters=12)
    table.add("P1", 0, "^abcdef")
    table.add("P2", 0, "^abcdef")  # the same regexp: counted once
    with pytest.raises(ValueError, match="over 12 characters"):
        table.add("P2", 1, "^ghijkl")
    assert table.characters == 7
    table.remove("P1", 0, "^abcdef")
    table.remove("P2", 0, "^abcdef")
    assert table.characters == 0
    table.add("P2", 1, "^ghijkl")  # room again


@pytest.mark.parametrize("regexp", ["(gone0(x+)+)+", "^data (.*)", "(a|b)*c"])
def test_the_length_past_which_a_search_is_timed(regexp: str) -> None:
    """An int, as a text's length is (the router compares them per candidate):
    the longest text whose search stays under COSTLY_STEPS; 0 for a regexp
    whose cost overflows the model, whose every search is timed."""
    entry = RegexpTable[str]().add("peer", 1, regexp)
    assert type(entry.costly_above) is int
    steps, fixed = entry.steps_per_char, entry.fixed_steps
    if steps == float("inf"):
        assert entry.costly_above == 0
    else:
        above = entry.costly_above
        assert fixed + above * steps <= COSTLY_STEPS < fixed + (above + 1) * steps


def test_a_regexp_costly_whatever_the_text_has_every_search_timed() -> None:
    """``^(?:){300000}`` costs 7 ms on any text: counted 1,756 steps a
    character, its searches of texts under 11 characters were not timed."""
    entry = RegexpTable[str]().add("peer", 1, "^(?:){300000}")
    assert entry.fixed_steps > COSTLY_STEPS
    assert entry.costly_above == -1  # (every text is longer)

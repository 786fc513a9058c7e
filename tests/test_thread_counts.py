"""Counting a text's matching subscriptions from another thread.

The count reads the peers' regexp table while the bus thread changes it:
every change holds the table's lock, and so does the count, so it never
fails on a change half made nor counts one. What it cannot count cheaply it
leaves to the bus thread (None).
"""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

from trivy._matching import RegexpTable
from trivy._thread_counts import (
    MAX_COUNTED_CANDIDATES,
    MAX_COUNTED_LENGTH,
    count_matches,
    share_with_threads,
)


class Peer:
    """A subscriber, as the router's sessions: being left, it gets nothing."""

    def __init__(self) -> None:
        self.closing = False


def _bus(table: RegexpTable[Peer], light_above: int = sys.maxsize) -> SimpleNamespace:
    """What :func:`count_matches` reads of a bus (its router's table and
    budgets), the table shared with threads."""
    budgets = SimpleNamespace(light_above=light_above)
    bus = SimpleNamespace(_router=SimpleNamespace(table=table, budgets=budgets))
    share_with_threads(bus)  # type: ignore[arg-type]
    return bus


def test_a_table_not_shared_with_threads_is_not_read_by_them() -> None:
    table: RegexpTable[Peer] = RegexpTable("match")
    table.add(Peer(), 0, r"^n (\d+)")
    budgets = SimpleNamespace(light_above=sys.maxsize)
    bus = SimpleNamespace(_router=SimpleNamespace(table=table, budgets=budgets))
    assert count_matches(bus, "n 1") is None  # type: ignore[arg-type]
    share_with_threads(bus)  # type: ignore[arg-type]
    assert count_matches(bus, "n 1") == 1  # type: ignore[arg-type]


def test_it_counts_subscriptions_as_the_router_sends_them() -> None:
    table: RegexpTable[Peer] = RegexpTable("match")
    one, two, leaving = Peer(), Peer(), Peer()
    table.add(one, 0, r"^n (\d+)")
    table.add(one, 1, r"^n (1\d*)")
    table.add(two, 0, r"^n (\d+)")
    table.add(leaving, 0, r"^n (\d+)")
    leaving.closing = True
    bus = _bus(table)
    assert count_matches(bus, "n 12") == 3  # type: ignore[arg-type]
    assert count_matches(bus, "n 2") == 2  # type: ignore[arg-type]
    assert count_matches(bus, "x 2") == 0  # type: ignore[arg-type]
    assert count_matches(bus, "") == 0  # type: ignore[arg-type]
    assert count_matches(bus, "n 1\ud800") is None  # type: ignore[arg-type]


def test_what_may_cost_is_left_to_the_bus_thread() -> None:
    table: RegexpTable[Peer] = RegexpTable("search")
    peer = Peer()
    table.add(peer, 0, r"^(a|b)(.*)")
    assert count_matches(_bus(table), "a" * 100) == 1  # type: ignore[arg-type]
    long_text = "a" * (MAX_COUNTED_LENGTH + 1)
    assert count_matches(_bus(table), long_text) is None  # type: ignore[arg-type]
    assert count_matches(_bus(table, light_above=5), "abcdef") is None  # type: ignore[arg-type]
    assert count_matches(_bus(table, light_above=-1), "a") is None  # type: ignore[arg-type]
    for sub_id in range(1, MAX_COUNTED_CANDIDATES + 1):  # (no prefix: all candidates)
        table.add(peer, sub_id, rf"^(a|b)(.*){sub_id}")
    assert count_matches(_bus(table), "a") is None  # type: ignore[arg-type]
    guarded: RegexpTable[Peer] = RegexpTable("search")
    guarded.add(peer, 0, r"^(\w+ )*(\d+)$")  # (the guard's: timed past a few characters)
    assert count_matches(_bus(guarded), "w " * 300 + "1") is None  # type: ignore[arg-type]


def test_counts_taken_while_the_table_changes_never_fail_nor_see_half_a_change() -> None:
    table: RegexpTable[Peer] = RegexpTable("match")
    steady, churning = Peer(), Peer()
    table.add(steady, 0, r"^n (\d+)")
    bus = _bus(table)
    stop, seen, failures = threading.Event(), set(), []

    def count() -> None:
        try:
            while not stop.is_set():
                seen.add(count_matches(bus, "n 12"))  # type: ignore[arg-type]
        except Exception as exc:  # (reported by the assertion below)
            failures.append(exc)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for round_ in range(300):  # the bus thread's changes: whole regexps come and go
            for sub_id in range(20):
                table.add(churning, sub_id, rf"^n (1\d*){'x' * sub_id}?")
            for sub_id in range(20):
                table.remove(churning, sub_id, rf"^n (1\d*){'x' * sub_id}?")
            if round_ == 150:
                table.add(churning, 99, r"^(n)")  # (another prefix length: no single bucket)
                table.remove(churning, 99, r"^(n)")
    finally:
        stop.set()
        counter.join()
    assert not failures
    assert seen <= set(range(1, 22)) and 1 in seen

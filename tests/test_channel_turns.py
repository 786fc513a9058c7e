"""A subscription's consumer: its turns with the other tasks, and the matches it is given."""

from __future__ import annotations

from time import perf_counter

import attrs
import pytest
import trio

from trivy._channels import CANCEL_CHECK_EVERY, ITEMS_PER_CHECKPOINT, BufferedReceiveChannel
from trivy._events import Match, Peer, new_match
from trivy._fairness import SERVE_SLICE


async def _longest_run_between_turns(items: int, work: float) -> int:
    """Items a consumer took in a row while another task waited for its turn.

    ``work``: seconds of CPU each item costs the consumer (a busy loop: the
    time passes whatever the machine's speed, which only makes it longer).
    trio runs the tasks of one pass in either order, so a consumer may take
    two turns in a row: a run is at most twice what one turn takes. (A
    turn takes one item more than the counts: the first item after a yield
    counts as none, so that the next call looks for a cancellation.)
    """
    channel: BufferedReceiveChannel[int] = BufferedReceiveChannel(items)
    for i in range(items):
        assert channel._put_nowait(i)
    channel._end()
    taken = 0
    runs: list[int] = []
    done = False

    async def other_task() -> None:
        last = 0
        while not done:
            runs.append(taken - last)
            last = taken
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()  # (the other task takes its first turn)
        async for _item in channel:
            started = perf_counter()
            while perf_counter() - started < work:
                pass
            taken += 1
        done = True
    assert taken == items
    return max(runs)


async def test_a_fast_consumer_yields_once_per_batch() -> None:
    longest = await _longest_run_between_turns(8 * ITEMS_PER_CHECKPOINT, 0.0)
    # a few µs an item: a batch is well within the slice
    assert ITEMS_PER_CHECKPOINT <= longest <= 2 * (ITEMS_PER_CHECKPOINT + 1), longest


async def test_a_slow_consumer_yields_once_its_slice_is_over() -> None:
    # items of half a slice each: the slice runs out within the first
    # CANCEL_CHECK_EVERY items (a batch would hold the loop 128 slices)
    longest = await _longest_run_between_turns(10 * CANCEL_CHECK_EVERY, SERVE_SLICE / 2)
    assert longest <= 2 * (CANCEL_CHECK_EVERY + 1), longest


def test_the_fast_match_is_the_match_attrs_would_make() -> None:
    # new_match sets the slots itself: a field added to Match must be set there too
    assert [field.name for field in attrs.fields(Match)] == ["peer", "groups", "subscription_id"]
    peer = Peer("Sender", "127.0.0.1", 2010)
    fast, made = new_match(peer, ("a", ""), 7), Match(peer, ("a", ""), 7)
    assert type(fast) is Match and fast == made and hash(fast) == hash(made)
    assert repr(fast) == repr(made)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.groups = ()  # type: ignore[misc]

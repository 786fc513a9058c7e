"""ivy-c's message filters: peers' regexps that fit none of our classes are not used."""

from __future__ import annotations

import pytest
import trio

import trivy
from trivy.testing import wait_for_subscription

TIMEOUT = 10


@pytest.mark.parametrize(
    ("regexp", "used"),
    [
        ("^TRACK (.*)", True),
        ("^TRA.*", True),  # a prefix of a class fits it (ivy-c)
        ("^STATUS$", True),
        ("^TRACKS (.*)", False),  # longer than the class
        ("^OTHER (.*)", False),
        ("^-x", False),  # '-' is a word character
        ("TRACK (.*)", True),  # not anchored: nothing can be told
        ("(.*)", True),
        ("^(TRACK|OTHER) (.*)", True),  # no literal word after ^
        ("^ (.*)", True),
    ],
)
def test_which_regexps_fit_the_classes(regexp: str, used: bool) -> None:
    assert trivy.MessageClasses(["TRACK", "STATUS"]).admits(regexp) is used


def test_no_classes_no_filtering_and_words_are_checked() -> None:
    assert trivy.MessageClasses().admits("^ANYTHING")
    classes = trivy.MessageClasses("TRACK")  # one word, as a string
    assert list(classes) == ["TRACK"] and "TRACK" in classes and len(classes) == 1
    classes.add("STATUS")
    classes.add("STATUS")
    classes.remove("TRACK")
    classes.remove("NEVER")
    assert list(classes) == ["STATUS"]
    classes.set([])
    assert classes.admits("^OTHER")
    for bad in ("", "two words", "été", "a.b"):
        with pytest.raises(ValueError, match="message class"):
            classes.add(bad)
    with pytest.raises(ValueError, match="message class"):
        trivy.BusOptions(agent_name="A", message_classes=["ok", "not ok"])
    options = trivy.BusOptions(agent_name="A", message_classes="TRACK, STATUS,TRACK")
    assert options.message_classes == ("TRACK", "STATUS")


async def test_filtered_regexps_are_not_used_and_changes_apply_to_later_ones(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("A", bus, message_classes=["TRACK"]) as a,
            trivy.open_ivy_bus("B", bus) as b,
        ):
            tracks = b.subscribe(r"^TRACK (\d+)")
            others = b.subscribe(r"^OTHER (\d+)")
            anything = b.subscribe(r"x(\d)")  # not anchored: always used
            await wait_for_subscription(a, "B", r"x(\d)")
            peer = a.peer("B")
            assert peer is not None and r"^OTHER (\d+)" in peer.subscriptions.values()
            assert a._router.table.entry(r"^OTHER (\d+)") is None  # never compiled
            assert await a.send("OTHER 1") == 0
            assert await a.send("TRACK 2") == 1
            assert await a.send("OTHER x3") == 1
            assert (await tracks.receive()).groups == ("2",)
            assert (await anything.receive()).groups == ("3",)
            # a class added now applies to regexps that come from now on
            a.message_classes.add("OTHER")
            assert await a.send("OTHER 4") == 0
            later = b.subscribe(r"^OTHER (\d)$")
            await wait_for_subscription(a, "B", r"^OTHER (\d)$")
            assert await a.send("OTHER 5") == 1
            assert (await later.receive()).groups == ("5",)
            with pytest.raises(trio.WouldBlock):
                others.receive_nowait()

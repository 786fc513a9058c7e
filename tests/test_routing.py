"""Our texts on the wire: the router's MSG bytes are the protocol layer's."""

from __future__ import annotations

import trio

import trivy
from trivy._connection import msg_head, msg_payload
from trivy.testing import RawPeer

TIMEOUT = 10


async def test_router_msgs_are_the_protocol_layers_bytes(bus: str) -> None:
    texts = ["b plain", "ab two groups", "b \udcff not utf-8", "b é", "no match"]
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("A", bus) as a:
            raw = await RawPeer.connect(a)
            await raw.handshake("RAW", b"1 7\x02^(a)?(b) ?(.*)\n1 8\x02^b\n")
            async with a.events() as events:
                while len(a.peers) < 1 or len(a.peers[0].subscriptions) < 2:
                    await events.receive()
            for text in texts:
                await a.send(text)
            assert a.send_nowait("ab") == 1  # the same bytes through send_nowait
            lines = []
            while len(lines) < 8:
                line = await raw.line()
                if line.startswith(b"2 "):
                    lines.append(line + b"\n")
            await raw.aclose()
    expected = [
        msg_head(7) + msg_payload(("", "b", "plain")),
        msg_head(8) + msg_payload(()),
        msg_head(7) + msg_payload(("a", "b", "two groups")),
        msg_head(7) + msg_payload(("", "b", "\udcff not utf-8")),
        msg_head(8) + msg_payload(()),
        msg_head(7) + msg_payload(("", "b", "é")),
        msg_head(8) + msg_payload(()),
        msg_head(7) + msg_payload(("a", "b", "")),
    ]
    assert b"2 7\x02\x03b\x03plain\x03\n" in lines  # the format, spelled out once
    assert b"2 8\x02\n" in lines  # ...and with no group: no ETX at all
    assert sorted(lines) == sorted(expected)


def test_a_closing_peer_is_neither_charged_nor_struck() -> None:
    """Its subscriptions may wait for the sweep: no account is kept for it again."""
    from types import SimpleNamespace

    from trivy._send_budgets import MAX_BUDGET_STRIKES, PEER_SEND_BUDGET, SendBudgets

    aborted: list[str] = []

    class Session:  # (hashable, as a PeerSession is)
        def __init__(self, closing: bool) -> None:
            self.closing, self.peer = closing, "peer"
            self.log = SimpleNamespace(warning=lambda *args: None)
            self.abort = aborted.append

    closing, live = Session(True), Session(False)
    entry = SimpleNamespace(
        subscribers={(closing, 1): None, (live, 2): None},
        peers={closing: {1: None}, live: {2: None}},
        steps_per_char=1,
        fixed_steps=0.0,
    )
    budgets = SendBudgets()
    for _ in range(MAX_BUDGET_STRIKES):
        budgets.charge(entry, PEER_SEND_BUDGET * 2)  # type: ignore[arg-type]
        assert budgets.skips(entry, 1000)  # type: ignore[arg-type]
        budgets.end_of_send()
    assert list(budgets.spent) == [] and len(aborted) == 1  # the live one only
    assert closing not in budgets._strikes


def test_past_the_sends_budget_what_a_regexp_costs_whatever_the_text_counts() -> None:
    """A regexp whose bound on a text is under 100 steps is searched even past
    the budget of all the peers, and so is one of a light peer: both were
    told by the rate a character alone, so regexps costly on any text (and
    their peers) passed for cheap on a short one."""
    from types import SimpleNamespace

    from trivy._send_budgets import SEND_BUDGET, SendBudgets

    class Session:  # (hashable, as a PeerSession is)
        closing = False

    costly, light = Session(), Session()
    fixed = SimpleNamespace(  # (^(?:){300}: 1,800 steps on any text, 2 a character)
        peers={costly: {1: None}}, steps_per_char=2.0, fixed_steps=1_800.0, guarded=False
    )
    cheap = SimpleNamespace(
        peers={light: {1: None}}, steps_per_char=2.0, fixed_steps=15.0, guarded=False
    )
    budgets = SendBudgets()
    for _ in range(6):  # (10,800 steps on any text: not a light peer)
        budgets.admit(costly, fixed)  # type: ignore[arg-type]
    budgets.admit(light, cheap)  # type: ignore[arg-type]
    budgets._spent_in_all = SEND_BUDGET * 2  # (the send's budget spent)
    assert budgets.skips(fixed, 1)  # type: ignore[arg-type]
    assert not budgets.skips(cheap, 1)  # type: ignore[arg-type]

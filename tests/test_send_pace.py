"""A burst of texts to many peers is coalesced; a lone text goes out at once.

A MSG to an idle peer is written from the sending task (one system call,
no scheduler pass) when the text is a lone one: a reply, an interactive
send. Texts sent back to back are left to each peer's writer, which sends
many in one call. Whether a text is one of a burst is told by the time
since the previous send ended, for every peer alike: a text to 16 peers
takes longer than the interval, so measured per peer every MSG of a
fan-out burst looked lone and went out on its own system call.
"""

from __future__ import annotations

import pytest
import trio

import trivy
from trivy._output import PeerOutput
from trivy.testing import RawPeer, wait_for_subscription

PEERS = 16
TEXTS = 200
TIMEOUT = 20


async def test_a_fan_out_burst_is_coalesced_a_lone_text_is_not(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = []
    write_now = PeerOutput._write_now

    def counted(self: PeerOutput, now: float) -> None:
        direct.append(self)
        write_now(self, now)

    monkeypatch.setattr(PeerOutput, "_write_now", counted)
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("Sender", bus) as sender:
            peers = []
            for k in range(PEERS):
                peer = await RawPeer.connect(sender)
                # (each its own announced port: a second claim of one is refused)
                hello = f"6 {1234 + k}\x02RAW{k}\n1 0\x02^(burst .*)\n5 0\x02\n"
                await peer.send(hello.encode())
                peers.append(peer)
            for k in range(PEERS):
                await wait_for_subscription(sender, f"RAW{k}", "^(burst .*)")
            assert await sender.send("burst lone") == PEERS
            assert len(direct) == PEERS  # a lone text: written at once, to each
            del direct[:]
            for i in range(TEXTS):
                await sender.send(f"burst {i}")
            for peer in peers:  # every MSG arrives, in order
                for i in ["lone", *range(TEXTS)]:
                    line = await peer.line_starting(b"2 0\x02")  # (MSG, subscription 0)
                    assert line == f"2 0\x02burst {i}\x03".encode()
            # before: one direct write per MSG (3,200); now at most the sends
            # that follow a pause (the writers' turn), a few per peer
            assert len(direct) < PEERS * TEXTS / 4, len(direct)
            for peer in peers:
                await peer.aclose()

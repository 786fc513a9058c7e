"""The probe against what a peer or a user may hand it.

A red team found the probe's escaping took 0.5 s of the loop for a peer's
1 MiB text of control characters (one character at a time in Python), and
a stdin line over a MSG's limit ended the probe's input: nothing after it
was sent.
"""

from __future__ import annotations

import time

import trio
from hypothesis import given
from hypothesis import strategies as st

from trivy import open_ivy_bus
from trivy._cli_common import _escaped, printable
from trivy._probe_commands import Probe
from trivy.testing import free_bus_address


def _one_at_a_time(text: str) -> str:
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


@given(st.text(alphabet=st.characters(codec=None), max_size=50))
def test_the_escaping_is_the_same_as_one_character_at_a_time(text: str) -> None:
    assert printable(text) == _one_at_a_time(text)


def test_a_mebibyte_of_control_characters_is_escaped_in_one_pass() -> None:
    printable("\x00")  # (the table is made once)
    tag = "\U000e0001"  # (an astral character that is not printable)
    for text in (
        "\x01" * (1 << 20),
        "\udcff" * (1 << 20),
        "\u202e" * (1 << 20),
        tag + "\x01" * (1 << 20),
    ):
        started = time.process_time()
        escaped = printable(text)
        spent = time.process_time() - started
        assert escaped == _one_at_a_time(text)
        assert spent < 0.25, f"{spent * 1000:.0f} ms for {text[:2]!r}"  # (0.5 s one at a time)


async def test_a_stdin_line_too_long_to_send_is_said_and_the_next_go() -> None:
    said: list[str] = []
    with trio.fail_after(10):
        async with open_ivy_bus("PROBE", free_bus_address()) as bus:
            commands = Probe(bus, said.append, show_bindings=False)
            await commands.command("x" * (1 << 20))
            await commands.command("next")
    assert said[0].startswith("-> not sent: a text over")
    assert said[1] == "-> Sent to 0 peers"

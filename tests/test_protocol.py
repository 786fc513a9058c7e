"""The sans-IO protocol layer: encoding, decoding, announces, bus strings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trivy
from trivy import IvyMalformedMessage, protocol
from trivy.protocol import Message, MsgType

# Text without the framing characters (\n ends a line, \x03 ends a group).
wire_text = st.text(
    alphabet=st.characters(blacklist_characters="\n\x03", blacklist_categories=["Cs"])
)


def test_message_types_have_the_protocol_numbers() -> None:
    assert [t.name for t in MsgType] == [
        "BYE", "ADD_REGEXP", "MSG", "ERROR", "DEL_REGEXP", "END_REGEXP",
        "START_REGEXP", "DIRECT_MSG", "DIE", "PING", "PONG",
    ]  # fmt: skip
    assert [int(t) for t in MsgType] == list(range(11))


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        ((MsgType.BYE, 0), b"0 0\x02\n"),
        ((MsgType.ADD_REGEXP, 3, "^hello (.*)"), b"1 3\x02^hello (.*)\n"),
        ((MsgType.MSG, 2, ["a", "", "c"]), b"2 2\x02a\x03\x03c\x03\n"),
        ((MsgType.MSG, 0, []), b"2 0\x02\n"),
        ((MsgType.START_REGEXP, 33525, "CPEER"), b"6 33525\x02CPEER\n"),
        ((MsgType.PONG, 5), b"10 5\x02\n"),
    ],
)
def test_encode_matches_the_bytes_real_peers_send(args: tuple, wire: bytes) -> None:  # type: ignore[type-arg]
    assert protocol.encode(*args) == wire


def test_encode_refuses_a_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        protocol.encode(MsgType.MSG, 0, ["two\nlines"])


@pytest.mark.parametrize(
    "line", [b"this line is malformed", b"3 java.util.regex.Pattern", b"x 1\x02", b"1\x02abc", b""]
)
def test_decode_rejects_lines_without_the_ivy_head(line: bytes) -> None:
    with pytest.raises(IvyMalformedMessage):
        protocol.decode(line)


def test_decode_keeps_unknown_types() -> None:
    assert protocol.decode(b"99 1\x02unknown type") == Message(99, 1, "unknown type")


@pytest.mark.parametrize(
    ("params", "groups"),
    [
        ("one two\x03", ("one two",)),
        ("a\x03\x03c\x03", ("a", "", "c")),
        ("no-etx", ("no-etx",)),  # ivy-c keeps a last group without ETX
        ("a\x03b", ("a", "b")),
        ("", ()),
        ("\x03", ("",)),
    ],
)
def test_msg_params_split_like_ivy_c(params: str, groups: tuple[str, ...]) -> None:
    assert protocol.split_msg_params(params) == groups


@given(st.lists(wire_text), st.integers(0, 2**31))
def test_msg_round_trip(groups: list[str], sub_id: int) -> None:
    line = protocol.encode(MsgType.MSG, sub_id, groups)
    msg = protocol.decode(line[:-1])
    assert (msg.type, msg.num_id) == (MsgType.MSG, sub_id)
    assert protocol.split_msg_params(msg.params) == tuple(groups)


@given(st.lists(wire_text, min_size=1), st.integers(0, 2**31))
def test_msg_round_trip_without_final_etx(groups: list[str], sub_id: int) -> None:
    """A peer that omits the last ETX (ivy-c tolerates it) loses nothing."""
    line = protocol.encode(MsgType.MSG, sub_id, groups)[:-2]  # drop "\x03\n"
    if groups[-1] == "":
        return  # an empty last group without ETX is indistinguishable from none
    assert protocol.split_msg_params(protocol.decode(line).params) == tuple(groups)


@given(st.binary().filter(lambda b: b"\n" not in b))
def test_invalid_utf8_passes_through_intact(raw: bytes) -> None:
    text = protocol.decode_text(raw)
    assert protocol.encode_text(text) == raw


def test_announce_round_trip_with_spaces_in_name() -> None:
    data = protocol.encode_announce(4321, "123:456:4321", "My Agent 2")
    assert data == b"3 4321 123:456:4321 My Agent 2\n"
    assert protocol.decode_announce(data) == protocol.Announce(
        3, 4321, "123:456:4321", "My Agent 2"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"3 33525 978579414:1795559366380:33525 CPEER\n",
         (3, 33525, "978579414:1795559366380:33525", "CPEER")),
        (b"3 43537 ID<JPEER0:1795559376000:-1922345320> JPEER\n",
         (3, 43537, "ID<JPEER0:1795559376000:-1922345320>", "JPEER")),
        (b"3 42123 PYPEER202611242229539277042123 PYPEER\n",
         (3, 42123, "PYPEER202611242229539277042123", "PYPEER")),
        (b"3 2345", (3, 2345, None, None)),  # old peers send only version and port
        (b"2 2345\n", (2, 2345, None, None)),
    ],
)  # fmt: skip
def test_decode_announces_of_every_reference_peer(data: bytes, expected: tuple) -> None:  # type: ignore[type-arg]
    assert tuple(protocol.decode_announce(data)) == expected


@pytest.mark.parametrize("data", [b"", b"3", b"hello world", b"3 99999 x y", b"3 -1 x"])
def test_bad_announces_are_rejected(data: bytes) -> None:
    with pytest.raises(IvyMalformedMessage):
        protocol.decode_announce(data)


def test_agent_ids_are_unique_tokens() -> None:
    from trivy._discovery import new_agent_id

    ids = {new_agent_id(1234) for _ in range(100)}
    assert len(ids) == 100
    assert all(" " not in agent_id for agent_id in ids)


@pytest.mark.parametrize(
    ("bus", "networks", "port"),
    [
        ("127:2010", ("127.255.255.255",), 2010),
        ("192.168.12:2345", ("192.168.12.255",), 2345),
        ("10.0.0,192.168.1:2010", ("10.0.0.255", "192.168.1.255"), 2010),
        ("224.255.255.250:2010", ("224.255.255.250",), 2010),
        ("239.1.2.3:3000", ("239.1.2.3",), 3000),
        (":2345", ("127.255.255.255",), 2345),
        ("127.0.0.1:2010", ("127.0.0.1",), 2010),
        ("127", ("127.255.255.255",), 2010),
    ],
)
def test_parse_bus(bus: str, networks: tuple[str, ...], port: int) -> None:
    assert protocol.parse_bus(bus) == (networks, port)


def test_parse_bus_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVYBUS", "192.168.1:3456")
    # the sans-IO layer never reads its environment...
    assert protocol.parse_bus(None) == (("127.255.255.255",), 2010)
    assert protocol.parse_bus("") == (("127.255.255.255",), 2010)
    assert str(protocol.parse_bus("10.1:99")) == "10.1.255.255:99"
    # ...the options do: None means $IVYBUS, then 127:2010; "" is a mistake
    assert trivy.BusOptions(agent_name="A").bus == (("192.168.1.255",), 3456)
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="an empty bus string"):
            trivy.BusOptions(agent_name="A", bus=empty)
    monkeypatch.delenv("IVYBUS")
    assert trivy.BusOptions(agent_name="A").bus == (("127.255.255.255",), 2010)


@pytest.mark.parametrize(
    "bus",
    ["127:port", "300.1:2010", "127:0", "127:70000", "a.b.c:2010", "1.2.3.4.5:2010", "127,:2010"],
)
def test_bad_bus_strings_raise_valueerror_naming_them(bus: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bus))):
        protocol.parse_bus(bus)


@pytest.mark.parametrize(
    ("address", "multicast"),
    [("224.0.0.1", True), ("239.255.255.255", True), ("238.1.1.1", True),
     ("223.255.255.255", False), ("240.0.0.1", False), ("127.255.255.255", False),
     ("ff02::1", True), ("::1", False), ("nonsense", False)],
)  # fmt: skip
def test_is_multicast_covers_224_to_239(address: str, multicast: bool) -> None:
    assert protocol.is_multicast(address) is multicast


# ------------------------------------------------------------ interval regexps


@given(st.integers(-3000, 3000))
def test_integer_interval_matches_exactly_the_range(value: int) -> None:
    pattern = re.compile("^alt=" + protocol.expand_intervals("(?I-10#2000i)") + "$")
    found = pattern.match(f"alt={value}")
    assert bool(found) == (-10 <= value <= 2000)
    if found:
        assert found.group(1) == str(value)


@given(st.integers(-500, 500), st.integers(0, 99))
def test_decimal_interval_matches_exactly_the_range(whole: int, hundredths: int) -> None:
    text = f"{whole}.{hundredths:02d}"
    value = float(text)
    pattern = re.compile("^v=" + protocol.expand_intervals("(?I-3#7)") + "$")
    assert bool(pattern.match(f"v={text}")) == (-3 <= value <= 7)


def test_interval_takes_numbers_whole() -> None:
    pattern = re.compile("x " + protocol.expand_intervals("(?I0#10i)"))
    assert pattern.search("x 7").group(1) == "7"  # type: ignore[union-attr]
    assert pattern.search("x 17") is None
    assert pattern.search("x 7.5") is None
    assert pattern.search("x -7") is None


def test_interval_keeps_the_rest_of_the_regexp() -> None:
    assert protocol.expand_intervals("^no interval (.*)$") == "^no interval (.*)$"
    with pytest.raises(ValueError, match="empty interval"):
        protocol.expand_intervals("(?I5#1)")

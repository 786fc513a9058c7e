"""The sans-IO connection state machine, fed the bytes real peers sent."""

from __future__ import annotations

import sys
from unittest.mock import ANY

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivy import IvyIllegalStateError
from trivy._connection import (
    GROUP_COST,
    MAX_EXCESS,
    MAX_LINE_LENGTH,
    MAX_MALFORMED_STREAK,
    QUEUED,
    QUEUED_OVER_LIMIT,
    REFUSED,
    Connection,
    ConnectionState,
)
from trivy._peer_regexps import PeerRegexps
from trivy._peers import duplicate_loser
from trivy._protocol_events import (
    Bye,
    Closing,
    DirectReceived,
    ErrorReceived,
    HandshakeDone,
    Malformed,
    PeerIdentified,
    PingReceived,
    PongReceived,
    RegexpAdded,
    RegexpRejected,
    RegexpRemoved,
    TextReceived,
    UnknownType,
)
from trivy.protocol import MAX_MSG_GROUPS

from .transcripts import PEER_NAMES, PEER_TCP, RECORDER_HANDSHAKE, RECORDER_TCP


def feed(conn: Connection, chunks: list[bytes]) -> list[object]:
    return [event for chunk in chunks for event in conn.receive_data(chunk)]


def test_msgs_come_as_plain_tuples_equal_to_text_received() -> None:
    conn = Connection()
    events = conn.receive_data(b"6 1\x02A\n5 0\x02\n2 3\x02x\x03y\x03\n2 4\x02\n")
    msgs = [e for e in events if type(e) is tuple]
    # size: x^Cy^C, and what two string objects cost
    assert msgs == [TextReceived(3, ("x", "y"), 4 + 2 * GROUP_COST), TextReceived(4, (), 0)]


def test_handshake_bytes() -> None:
    conn = Connection()
    conn.send_handshake(4000, "ME", [(0, "^a (.*)"), (3, "^b")])
    assert conn.data_to_send() == b"6 4000\x02ME\n1 0\x02^a (.*)\n1 3\x02^b\n5 0\x02\n"


def test_ivy_c_transcript() -> None:
    conn = Connection()
    events = feed(conn, PEER_TCP["ivy-c"])
    assert events == [
        PeerIdentified("CPEER", 33525),
        RegexpAdded(1, "^multi (a)?(b)?(c)?", None),
        RegexpAdded(0, "^hello (.*)", None),
        HandshakeDone(),
        ErrorReceived(9, "Error compiling '(unclosed', missing )"),
        TextReceived(0, ("one two",), ANY),  # split across two reads
        TextReceived(2, ("a", "", "c"), ANY),
        TextReceived(0, ("replaced",), ANY),
        PongReceived(5, False),
        ErrorReceived(3, "bad format request expected 'type id ...'"),
        Bye(),
    ]
    assert conn.state is ConnectionState.CLOSED
    assert conn.subscriptions == {1: "^multi (a)?(b)?(c)?", 0: "^hello (.*)"}


def test_ivy_java_transcript_malformed_error_keeps_the_connection() -> None:
    conn = Connection()
    events = feed(conn, PEER_TCP["ivy-java"])
    assert events[:4] == [
        PeerIdentified("JPEER", 43537),
        RegexpAdded(0, "^hello (.*)", None),
        RegexpAdded(1, "^multi (a)?(b)?(c)?", None),
        HandshakeDone(),
    ]
    # ivy-java's ERROR has no STX and spans two lines: two malformed lines
    assert [type(e) for e in events[4:6]] == [Malformed, Malformed]
    assert events[6:] == [
        TextReceived(0, ("one two",), ANY),
        TextReceived(2, ("a", "null", "c"), ANY),  # ivy-java's "null" group, tolerated
        TextReceived(0, ("replaced",), ANY),
        PongReceived(5, False),
    ]
    assert conn.state is ConnectionState.READY


def test_ivy_python_transcript() -> None:
    events = feed(Connection(), PEER_TCP["ivy-python"])
    assert events == [
        PeerIdentified("PYPEER", 42123),
        RegexpAdded(0, "^hello (.*)", None),
        RegexpAdded(1, "^multi (a)?(b)?(c)?", None),
        HandshakeDone(),
        TextReceived(0, ("one two",), ANY),
        TextReceived(2, ("a", "", "c"), ANY),
        TextReceived(0, ("replaced",), ANY),
        PongReceived(5, False),
    ]


@pytest.mark.parametrize("implementation", sorted(PEER_TCP))
def test_every_transcript_reads_the_same_byte_by_byte(implementation: str) -> None:
    """Splitting the stream anywhere changes nothing."""
    whole = b"".join(PEER_TCP[implementation])
    assert feed(Connection(), [bytes([b]) for b in whole]) == feed(Connection(), [whole])
    assert PEER_NAMES[implementation] in repr(feed(Connection(), [whole])[0])


def test_recorder_lines() -> None:
    conn = Connection()
    events = feed(conn, [RECORDER_HANDSHAKE, *RECORDER_TCP])
    assert events == [
        PeerIdentified("RECORDER", 48817),
        RegexpAdded(0, "^rec (.*)", None),
        RegexpAdded(1, "(unclosed", None),  # whether it compiles is the matcher's call
        RegexpAdded(2, "^multi (a)?(b)?(c)?", None),
        HandshakeDone(),
        RegexpAdded(0, "^rec2 (.*)", "^rec (.*)"),  # same id: replaced
        TextReceived(0, ("world",), ANY),
        TextReceived(0, ("no-etx",), ANY),
        PingReceived(5),
        DirectReceived(7, "hi there"),
        RegexpRemoved(2, "^multi (a)?(b)?(c)?"),
        UnknownType(99, 1, "unknown type"),
        Malformed("this line is malformed", "bad format request expected 'type id ...'"),
    ]
    assert conn.subscriptions == {0: "^rec2 (.*)", 1: "(unclosed"}
    # the replies those lines call for, decided here: the ERROR; the PONG is
    # sent by whoever acts on the events, after those before the PING
    assert conn.data_to_send() == (b"3 3\x02bad format request expected 'type id ...'\n")
    conn.send_pong(5)
    assert conn.data_to_send() == b"10 5\x02\n"
    # the matcher could not compile one: ivy-c's answer, offset first
    rejected = conn.reject_regexp(1, "(unclosed", "missing ), unterminated subpattern", 0)
    assert rejected == RegexpRejected(1, "(unclosed", "missing ), unterminated subpattern", None)
    assert conn.subscriptions == {0: "^rec2 (.*)"}
    assert conn.data_to_send() == (
        b"3 0\x02Error compiling '(unclosed', missing ), unterminated subpattern\n"
    )


def test_a_peers_regexps_are_bounded_in_length_count_and_size() -> None:
    conn = Connection(regexps=PeerRegexps(max_length=10, max_count=3, max_total=25))
    feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    events = conn.receive_data(
        b"1 0\x02" + b"a" * 11 + b"\n"  # too long
        b"1 1\x02" + b"b" * 10 + b"\n1 2\x02" + b"c" * 10 + b"\n"
        b"1 3\x02" + b"d" * 10 + b"\n"  # 30 characters in all
        b"1 2\x02" + b"e" * 5 + b"\n"  # a replacement that fits: 15
        b"1 4\x02f\n1 5\x02g\n"  # a third one fits, a fourth does not
    )
    kinds = [(type(e).__name__, e.sub_id) for e in events]  # type: ignore[union-attr]
    assert kinds == [
        ("RegexpRejected", 0),
        ("RegexpAdded", 1),
        ("RegexpAdded", 2),
        ("RegexpRejected", 3),
        ("RegexpAdded", 2),
        ("RegexpAdded", 4),
        ("RegexpRejected", 5),
    ]
    assert conn.subscriptions == {1: "b" * 10, 2: "eeeee", 4: "f"}
    errors = conn.data_to_send().splitlines()
    assert errors == [
        b"3 0\x02Error compiling '" + b"a" * 11 + b"', regexp longer than 10 characters",
        b"3 0\x02Error compiling '" + b"d" * 10 + b"', regexps over 25 characters in all",
        b"3 0\x02Error compiling 'g', more than 3 subscriptions",
    ]


def test_every_byte_we_send_comes_from_the_connection() -> None:
    conn = Connection(java_newlines=True)
    with pytest.raises(IvyIllegalStateError):
        conn.send_direct(1, "before our handshake")
    conn.send_handshake(1234, "ME", [])
    with pytest.raises(IvyIllegalStateError):
        conn.send_handshake(1234, "ME", [])  # once only
    assert conn.bytes_queued == len(conn.data_to_send()) > 0
    assert conn.bytes_queued == 0  # handed out: the buffer starts anew
    conn.send_subscription(4, "^a (.*)")
    conn.send_unsubscription(4)
    conn.send_msg(2, ["x", "two\nlines"])
    conn.send_direct(7, "hi\nthere")
    conn.send_error(1, "oops")
    conn.send_die()
    assert conn.send_ping() == 1
    conn.send_raw(99, 1, "raw")
    conn.send_msg_payload(3, b"shared\x03\n")
    conn.send_bye()
    queued = conn.bytes_queued
    assert len(data := conn.data_to_send()) == queued  # the count is exact
    assert data == (
        b"1 4\x02^a (.*)\n4 4\x02\n2 2\x02x\x03two\x1alines\x03\n7 7\x02hi\x1athere\n"
        b"3 1\x02oops\n8 0\x02\n9 1\x02\n99 1\x02raw\n2 3\x02shared\x03\n0 0\x02\n"
    )
    with pytest.raises(IvyIllegalStateError):
        conn.send_direct(1, "after BYE")
    with pytest.raises(IvyIllegalStateError):  # the router's MSGs are checked too
        conn.send_msg_payload(3, b"after BYE\x03\n")
    assert not conn.data_to_send()


def test_the_routers_msgs_are_checked_for_length() -> None:
    conn = Connection()
    with pytest.raises(IvyIllegalStateError):
        conn.send_msg_payload(1, b"before our handshake\n")
    conn.send_handshake(1, "ME", [])
    conn.data_to_send()
    with pytest.raises(ValueError, match="peers refuse"):
        conn.send_msg_payload(1, b"x" * MAX_LINE_LENGTH + b"\n")
    assert conn.bytes_queued == 0  # nothing of it was queued


def test_the_routers_msgs_are_counted_against_the_send_limit() -> None:
    conn = Connection(send_limit=20)
    conn.send_handshake(1, "ME", [])
    conn.data_to_send()
    woken: list[int] = []
    assert conn.send_msg_payload(1, b"0123456789\x03\n") == QUEUED  # 4 + 12 bytes
    conn.bytes_unsent = 10  # the I/O layer took them and wrote 7
    conn.data_to_send()
    conn.wake_output = woken.append  # the I/O layer waits for bytes
    assert conn.send_msg_payload(1, b"0123456789\x03\n") == QUEUED  # 10 <= 20
    assert woken == [10]  # told, with what was queued before
    assert conn.send_msg_payload(1, b"x\x03\n") == REFUSED  # 26 > 20
    assert conn.bytes_queued == 16  # the refused one left nothing
    assert conn.send_msg_payload(1, b"x\x03\n", True) == QUEUED_OVER_LIMIT
    assert woken == [10, 26]
    conn.bytes_unsent = 20 + MAX_EXCESS  # a waiting sender may exceed, not for ever
    assert conn.send_msg_payload(1, b"x\x03\n", True) == REFUSED
    conn.bytes_unsent = 0
    conn.data_to_send()
    assert conn.send_msg_payload(1, b"x\x03\n") == QUEUED  # room again


def test_pongs_are_matched_to_our_pings() -> None:
    conn = Connection()
    conn.send_handshake(1, "ME", [])
    feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    ping_id = conn.send_ping()
    events = conn.receive_data(b"10 %d\x02\n10 77\x02\n10 %d\x02\n" % (ping_id, ping_id))
    expected = [PongReceived(ping_id, True), PongReceived(77, False), PongReceived(ping_id, False)]
    assert events == expected


def test_replies_quote_a_short_prefix_and_stop_after_bye() -> None:
    conn = Connection()
    feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    conn.receive_data(b"1 3\x02(" + b"x" * 10_000 + b"\n")
    assert len(conn.data_to_send()) < 300  # the ERROR quotes the regexp's start only
    conn.send_bye()
    conn.data_to_send()
    conn.receive_data(b"9 1\x02\nnonsense\n")
    conn.send_pong(1)
    assert not conn.data_to_send()  # no PONG, no ERROR after our BYE


def test_start_regexp_must_come_first_and_once() -> None:
    conn = Connection()
    (event,) = conn.receive_data(b"1 0\x02^a\n")
    assert isinstance(event, Malformed) and "START_REGEXP first" in event.reply
    feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    (event,) = conn.receive_data(b"6 2\x02B\n")
    assert isinstance(event, Malformed) and "twice" in event.reply
    assert conn.peer_name == "A"


def test_messages_after_bye_are_ignored() -> None:
    conn = Connection()
    events = conn.receive_data(b"6 1\x02A\n5 0\x02\n0 0\x02\n2 0\x02x\x03\n")
    assert events[-1] == Bye()
    assert conn.receive_data(b"2 0\x02y\x03\n") == []


def test_end_of_stream_is_bye() -> None:
    conn = Connection()
    assert conn.receive_data(b"") == [Bye()]


def test_overlong_line_closes() -> None:
    conn = Connection(max_line_length=100)
    events = conn.receive_data(b"6 1\x02A\n" + b"x" * 101)
    assert isinstance(events[-1], Closing)


def test_malformed_flood_closes_but_a_few_do_not() -> None:
    conn = Connection()
    feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    events = conn.receive_data(b"garbage\n" * (MAX_MALFORMED_STREAK - 1) + b"9 1\x02\n")
    assert events[-1] == PingReceived(1) and conn.state is ConnectionState.READY
    events = conn.receive_data(b"garbage\n" * MAX_MALFORMED_STREAK)
    assert isinstance(events[-1], Closing)
    assert conn.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    "line", [b"6 1\x02A\n", b"2 0\x02early\x03\n"], ids=["START twice", "a MSG first"]
)
def test_lines_out_of_place_count_as_malformed_in_a_row(line: bytes) -> None:
    """They decode, but make no sense: 100,000 re-sent START_REGEXPs kept a peer on."""
    conn = Connection()
    if line.startswith(b"6 "):
        feed(conn, [b"6 1\x02A\n5 0\x02\n"])
    events = conn.receive_data(line * MAX_MALFORMED_STREAK)
    assert isinstance(events[-1], Closing)
    assert conn.state is ConnectionState.CLOSED


def test_java_newline_escape() -> None:
    conn = Connection(java_newlines=True)
    events = feed(conn, [b"6 1\x02J\n5 0\x02\n2 0\x02two\x1alines\x03\n7 1\x02a\x1ab\n"])
    assert events[-2:] == [TextReceived(0, ("two\nlines",), ANY), DirectReceived(1, "a\nb")]


def test_invalid_utf8_is_kept() -> None:
    conn = Connection()
    events = feed(conn, [b"6 1\x02A\n5 0\x02\n2 0\x02caf\xe9\x03\n"])
    (groups,) = [e[1] for e in events if type(e) is tuple]  # MSGs come as plain tuples
    assert groups[0].encode("utf-8", "surrogateescape") == b"caf\xe9"


@given(st.lists(st.binary(max_size=40), max_size=30))
def test_any_bytes_never_raise(chunks: list[bytes]) -> None:
    conn = Connection()
    for chunk in chunks:
        conn.receive_data(chunk)


def test_duplicate_choice_is_symmetric() -> None:
    # connection 1: A's port 40001 -> B's listener 5000; connection 2: B's 40002 -> A's 6000
    # each side sees the same (local, remote) pair, swapped
    assert duplicate_loser(40001, 5000) == duplicate_loser(5000, 40001)
    assert duplicate_loser(40002, 6000) > duplicate_loser(40001, 5000)


def test_crlf_lines_read_the_same_on_both_paths() -> None:
    conn = Connection()
    events = conn.receive_data(b"6 1\x02A\r\n5 0\x02\r\n2 0\x02a\x03\r\n2 1\x02b\r\n")
    assert events[0] == PeerIdentified("A", 1)
    assert events[-2:] == [TextReceived(0, ("a",), ANY), TextReceived(1, ("b",), ANY)]


@pytest.mark.parametrize("cut", range(1, 9))
def test_a_crlf_msg_cut_anywhere_reads_the_same(cut: int) -> None:
    """The CR is looked for in a read and in what is held of its first line:
    a MSG cut just before its LF, or anywhere, is read as a whole one."""
    conn = Connection()
    conn.receive_data(b"6 1\x02A\r\n5 0\x02\r\n")
    line = b"2 0\x02ab\x03\r\n"
    events = conn.receive_data(line[:cut]) + conn.receive_data(line[cut:])
    assert events == [TextReceived(0, ("ab",), ANY)]


@pytest.mark.parametrize("split", range(0, 13))
def test_line_limit_is_exact_however_the_line_is_split(split: int) -> None:
    from trivy._lines import LineBuffer

    for size, too_long in ((10, False), (11, True)):
        data = b"a\n" + b"x" * size + b"\nb\n"
        buffer = LineBuffer(10)
        first, overflow_first = buffer.feed(data[:split])
        second, overflow_second = buffer.feed(data[split:]) if not overflow_first else ([], True)
        lines = [line for line in first + second if line]
        assert (overflow_first or overflow_second) == too_long
        if too_long:
            assert "x" * size not in lines and "b" not in lines
        else:
            assert lines == ["a", "x" * 10, "b"]


@pytest.mark.parametrize("trailing_etx", [True, False])
@pytest.mark.parametrize("ready", [True, False])
def test_a_msg_of_more_groups_than_any_regexp_has_is_refused_unsplit(
    trailing_etx: bool, ready: bool
) -> None:
    """524,000 one-byte groups in a 1 MiB line: 47 ms to split, 44 MB held."""
    conn = Connection()
    conn.receive_data(b"6 1\x02A\n" + (b"5 0\x02\n" if ready else b""))
    end = b"\x03" if trailing_etx else b""
    most = b"\x03".join([b"g"] * MAX_MSG_GROUPS) + end
    (fine,) = conn.receive_data(b"2 7\x02" + most + b"\n")
    assert fine == (7, ("g",) * MAX_MSG_GROUPS, ANY)
    conn.data_to_send()
    (refused,) = conn.receive_data(b"2 7\x02" + b"g\x03" * MAX_MSG_GROUPS + b"g" + end + b"\n")
    assert isinstance(refused, Malformed)
    assert f"over {MAX_MSG_GROUPS} groups".encode() in conn.data_to_send()
    (after,) = conn.receive_data(b"2 7\x02x\x03\n")  # (and nothing else is lost)
    assert after == (7, ("x",), ANY)


def test_a_msgs_size_counts_what_its_groups_cost_in_memory() -> None:
    """Counted in characters, a MSG of characters past ASCII took up to four
    times what it said (a str of them keeps 2 or 4 bytes each)."""
    conn = Connection()
    conn.receive_data(b"6 1\x02A\n5 0\x02\n")
    text = "\U0001f600" * 1000 + "x" * 100_000
    ((_id, groups, size),) = conn.receive_data(b"2 1\x02" + text.encode() + b"\x03\n")
    real = sys.getsizeof(groups) + sum(sys.getsizeof(group) for group in groups)
    assert real <= size
    ((_id, groups, size),) = conn.receive_data(b"2 1\x02" + b"\x80\x03" * 999 + b"\n")
    real = sys.getsizeof(groups) + sum(sys.getsizeof(group) for group in groups)
    assert real <= size

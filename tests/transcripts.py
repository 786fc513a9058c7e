"""Bytes that real Ivy peers sent on a bus (ivy-c 3.15, ivy-java 1.2.18,
ivy-python 4.0), as recorded in the project's shared transcripts.

``PEER_TCP`` holds, per implementation, every chunk the reference peer wrote
on its TCP connection, in order and split as it arrived. ``RECORDER_TCP`` is
what the recording agent sent them (the same for all three).
"""

from __future__ import annotations

IVY_C_TCP = [
    b"6 33525\x02CPEER\n1 1\x02^multi (a)?(b)?(c)?\n1 0\x02^hello (.*)\n5 0\x02\n",
    b"3 9\x02Error compiling '(unclosed', missing )\n",
    b"2 0\x02",
    b"one two\x03\n",
    b"2 2\x02",
    b"a\x03\x03c\x03\n",
    b"2 0\x02",
    b"replaced\x03\n",
    b"10 5\x02\n",
    b"3 3\x02bad format request expected 'type id ...'\n",
    b"0 0\x02\n",
]

IVY_JAVA_TCP = [
    b"6 43537\x02JPEER\n",
    b"1 0\x02^hello (.*)\n",
    b"1 1\x02^multi (a)?(b)?(c)?\n",
    b"5 0\x02\n",
    b"3 java.util.regex.PatternSyntaxException: Unclosed group near index 9\n(unclosed\n",
    b"2 0\x02one two\x03\n",
    b"2 2\x02a\x03null\x03c\x03\n",
    b"2 0\x02replaced\x03\n",
    b"10 5\x02\n",
]

IVY_PYTHON_TCP = [
    b"6 42123\x02PYPEER\n1 0\x02^hello (.*)\n1 1\x02^multi (a)?(b)?(c)?\n5 0\x02\n",
    b"2 0\x02one two\x03\n",
    b"2 2\x02a\x03\x03c\x03\n",
    b"2 0\x02replaced\x03\n",
    b"10 5\x02\n",
]

PEER_TCP = {"ivy-c": IVY_C_TCP, "ivy-java": IVY_JAVA_TCP, "ivy-python": IVY_PYTHON_TCP}
PEER_NAMES = {"ivy-c": "CPEER", "ivy-java": "JPEER", "ivy-python": "PYPEER"}

#: The recorder's handshake: its subscription 1 does not compile.
RECORDER_HANDSHAKE = (
    b"6 48817\x02RECORDER\n1 0\x02^rec (.*)\n1 1\x02(unclosed\n"
    b"1 2\x02^multi (a)?(b)?(c)?\n5 0\x02\n"
)
#: What the recorder sent after its handshake, one chunk per write.
RECORDER_TCP = [
    b"1 0\x02^rec2 (.*)\n",
    b"2 0\x02world\x03\n",
    b"2 0\x02no-etx\n",
    b"9 5\x02\n",
    b"7 7\x02hi there\n",
    b"4 2\x02\n",
    b"99 1\x02unknown type\n",
    b"this line is malformed\n",
]

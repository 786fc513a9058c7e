"""The compat layer where it differed from ivy-python, against a real ivy-python peer.

- A regexp change callback bound after ``start()`` (the seed example's
  shape) lost the first peer's subscriptions when they were reported
  before it was bound; ivy-python loses them too, one run in eight.
- ``stop()`` and an obeyed DIE told the application callback nothing of
  the agents left behind; ivy-python calls it with
  ``IvyApplicationDisconnected`` for each.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

import pytest

from trivy.compat.ivy import (
    IvyApplicationDisconnected,
    IvyClient,
    IvyRegexpAdded,
    IvyServer,
)

from .test_compat import (
    PEER_NAME,
    TIMEOUT,
    PythonPeer,
    Recorder,
    connected,
    make_server,
    subscribed,
)

HELLO = r"^hello (\w+) (\w+)"


def _added(rec: Recorder, regexp: str) -> int:
    return rec.count(lambda i: i[0] == "regexp" and i[2] == IvyRegexpAdded and i[4] == regexp)


class WatchedServer(IvyServer):
    """Says when a regexp change has been handled (an override, as agents write them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handled = threading.Event()

    def handle_regexp_change(self, client: IvyClient, event: int, num_id: int, regexp: str) -> None:
        super().handle_regexp_change(client, event, num_id, regexp)
        self.handled.set()


def test_a_regexp_change_callback_bound_after_start_hears_what_came_before(port: int) -> None:
    rec = Recorder()
    server = WatchedServer("COMPAT", app_callback=rec.app, usesDaemons=True)
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", HELLO)
    try:
        client = connected(rec)
        # its subscription was reported, to nobody, before the binding: the
        # run that lost it
        assert server.handled.wait(TIMEOUT)
        server.bind_regexp_change(rec.regexp)
        item = subscribed(rec, HELLO)
        assert item[1] is client and item[3] == 0
        peer.command("bind", regexp="^later (.*)")
        subscribed(rec, "^later (.*)")  # reported after the replay, and once
        assert _added(rec, HELLO) == 1 and _added(rec, "^later (.*)") == 1
    finally:
        peer.close()
        server.stop()


def _disconnections(rec: Recorder) -> list[Any]:
    return [
        i[1].agent_name for i in rec.seen if i[0] == "app" and i[2] == IvyApplicationDisconnected
    ]


def test_stop_tells_the_application_callback_of_each_agent_left(port: int) -> None:
    rec = Recorder()
    server = IvyServer("COMPAT", app_callback=rec.app, usesDaemons=True)
    server.start(f"127:{port}")
    peers = [PythonPeer(port, name) for name in ("LEFT1", "LEFT2")]
    try:
        for name in ("LEFT1", "LEFT2"):
            connected(rec, name)
        server.stop()
        assert sorted(_disconnections(rec)) == ["LEFT1", "LEFT2"]
    finally:
        for peer in peers:
            peer.close()


def test_an_obeyed_die_tells_the_application_callback_of_each_agent_left(port: int) -> None:
    rec = Recorder()
    server = IvyServer("COMPAT", app_callback=rec.app, usesDaemons=True)
    server.start(f"127:{port}")
    killer = PythonPeer(port, "KILLER")
    bystander = PythonPeer(port, "BYSTANDER")
    try:
        connected(rec, "KILLER")
        connected(rec, "BYSTANDER")
        killer.expect("connected", name="COMPAT")
        killer.command("die", to="COMPAT")
        assert server.server_termination.wait(TIMEOUT)
        rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected
                     and i[1].agent_name == "BYSTANDER")  # fmt: skip
        assert sorted(_disconnections(rec)) == ["BYSTANDER", "KILLER"]
    finally:
        killer.close()
        bystander.close()


def test_a_regexp_that_does_not_compile_is_refused_at_once_not_kept(port: int) -> None:
    """Kept, it made the next start() fail with a nested exception group."""
    server = IvyServer("COMPAT", usesDaemons=True)
    good = server.bind_msg(print, "^good (.*)")
    with pytest.raises(ValueError, match="bad regexp"):
        server.bind_msg(print, "((")
    assert server.get_subscriptions() == [(good, "^good (.*)")]
    server.start(f"127:{port}")  # (it raised here)
    try:
        with pytest.raises(ValueError, match="bad regexp"):
            server.bind_msg(print, "((")
        assert server.get_subscriptions() == [(good, "^good (.*)")]
    finally:
        server.stop()


def test_sys_exit_in_a_callback_stops_no_later_callback(port: int) -> None:
    """ivy-python runs a callback on the thread of the agent that caused it:
    ``sys.exit()`` there ends that thread only. It ended compat's one
    callback thread: no callback ran again, silently."""
    got: queue.Queue[str] = queue.Queue()
    server = IvyServer("EXITS", usesDaemons=True)
    server.bind_msg(lambda agent: sys.exit(), "^exit$")
    server.bind_msg(lambda agent, text: got.put(text), "^hello (.*)")
    server.start(f"127:{port}")
    peer = PythonPeer(port, "SENDER")
    try:
        peer.expect("regexp", sender="EXITS", regexp="^hello (.*)")
        peer.command("send", text="exit")
        peer.command("send", text="hello after")
        assert got.get(timeout=TIMEOUT) == "after"
    finally:
        peer.close()
        server.stop()


def test_a_text_with_a_newline_sends_its_first_line_as_ivy_python_does(port: int) -> None:
    """ivy-python sends it whole, and its groups stop at the newline: its
    peers get the first line. trivy refuses a newline: ValueError, which an
    unmodified program did not expect."""
    server = IvyServer("LINES", "ready\nsecond", usesDaemons=True)
    server.start(f"127:{port}")
    peer = PythonPeer(port, "GETS", "--bind", "^(.*)$")
    try:
        assert peer.expect("msg", sender="LINES")["groups"] == ["ready"]
        assert server.send_msg("line1\nline2") == 1
        assert peer.expect("msg", sender="LINES")["groups"] == ["line1"]
    finally:
        peer.close()
        server.stop()


def test_a_peers_messages_direct_messages_and_regexp_changes_keep_their_order(port: int) -> None:
    """Messages came from the peer's task, the rest through the event stream,
    which lagged: messages overtook the direct messages and regexp changes
    sent before them (3 runs in 3)."""
    rec = Recorder()
    server = make_server(rec)
    server.bind_msg(lambda agent, n: rec.add("msg", agent, int(n)), "^m (\\d+)")
    server.start(f"127:{port}")
    peer = PythonPeer(port, "ORDERED")
    try:
        connected(rec, "ORDERED")
        peer.expect("regexp", sender="COMPAT", regexp="^m (\\d+)")
        for n in range(0, 60, 3):
            peer.command("direct", to="COMPAT", num_id=n, text=str(n))
            peer.command("send", text=f"m {n + 1}")
            peer.command("bind", regexp=f"^r{n + 2}$")
        rec.wait_for(lambda i: i[0] == "regexp" and i[4] == "^r59$")
        seen = [
            i[4] if i[0] == "regexp" else i[2]
            for i in rec.seen
            if i[0] in ("direct", "msg") or (i[0] == "regexp" and i[4].startswith("^r"))
        ]
        numbers = [int(str(x).strip("^r$")) for x in seen]
        assert numbers == list(range(60)), seen
    finally:
        peer.close()
        server.stop()


class _Display(IvyServer):
    """A subclass with attributes of its own, named as agents name them."""

    def __init__(self) -> None:
        super().__init__("DISPLAY", usesDaemons=True)
        self._callbacks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._clients: list[str] = []
        self.host = "display-01"  # (a name for its own use, not one to bind to)

    def bind_locked(self, regexp: str) -> int:
        with self._lock:  # (held while binding: compat's own lock had that name)
            return self.bind_msg(lambda agent, *groups: None, regexp)


def test_a_subclass_keeps_attributes_of_its_own(port: int) -> None:
    """Compat's private attributes had the names a subclass picks:
    ``_callbacks`` broke start(), ``_lock`` held while binding deadlocked,
    ``host`` was bound to."""
    server = _Display()
    assert server.bind_locked("^early") == 0
    server.start(f"127:{port}")
    try:
        assert server.bind_locked("^late") == 1
        assert server._callbacks == {} and server._clients == []
    finally:
        server.stop()

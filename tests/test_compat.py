"""trivy.compat.ivy: ivy-python's synchronous IvyServer API over trivy.

Plain synchronous tests, as a ported ivy-python agent would run: a compat
IvyServer in this process (its bus in a background thread) and, for the
interop tests, a real ivy-python 4.0 agent in its own process
(``trivy.testing``'s ivy-python process, driven through JSON lines). Every wait is on
an observed event with a timeout, never on a delay.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from trivy.compat import _server as compat_server
from trivy.compat import ivy as compat
from trivy.compat.ivy import (
    IVY_SHOULD_NOT_DIE,
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyClient,
    IvyIllegalStateError,
    IvyRegexpAdded,
    IvyRegexpRemoved,
    IvyServer,
    IvyTimer,
)

PEER_MODULE = "trivy.testing._ivy_python_process"
PEER_NAME = "PYPEER"
#: Upper bound of every single wait.
TIMEOUT = 10.0

Event = dict[str, Any]


class PythonPeer:
    """The ivy-python process: send it commands, wait for the events it reports."""

    def __init__(self, port: int, name: str = PEER_NAME, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", PEER_MODULE, "--bus", f"127:{port}", "--name", name, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[Event | None] = queue.Queue()
        self._pending: list[Event] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self.expect("ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def command(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()

    def expect(self, event: str, **fields: Any) -> Event:
        """The next reported event of that kind and field values (bounded wait)."""

        def matches(candidate: Event) -> bool:
            return candidate.get("event") == event and all(
                candidate.get(k) == v for k, v in fields.items()
            )

        for index, candidate in enumerate(self._pending):
            if matches(candidate):
                return self._pending.pop(index)
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = self._next_line(deadline, f"{event} {fields}")
            if matches(line):
                return line
            self._pending.append(line)

    def events(self, count: int, kinds: tuple[str, ...]) -> list[Event]:
        """The next ``count`` events of these kinds, in the order reported
        (the others are dropped)."""
        found = [event for event in self._pending if event["event"] in kinds]
        self._pending.clear()
        deadline = time.monotonic() + TIMEOUT
        while len(found) < count:
            line = self._next_line(deadline, f"{count - len(found)} more of {kinds}")
            if line["event"] in kinds:
                found.append(line)
        return found[:count]

    def _next_line(self, deadline: float, waited: str) -> Event:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {waited} from ivy-python; pending {self._pending}"
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"ivy-python exited; waited for {waited}"
            return line

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("stop")
                self.process.wait(TIMEOUT)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class Recorder:
    """Collects what the compat callbacks see; waits on it with a timeout."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self._cond = threading.Condition()

    def add(self, *item: Any) -> None:
        with self._cond:
            self.seen.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
        """The first recorded item satisfying ``predicate`` (waits for it)."""
        found: list[tuple[Any, ...]] = []

        def check() -> bool:
            found[:] = [item for item in self.seen if predicate(item)][:1]
            return bool(found)

        with self._cond:
            assert self._cond.wait_for(check, TIMEOUT), f"not seen; seen {self.seen}"
        return found[0]

    def count(self, predicate: Callable[[tuple[Any, ...]], bool]) -> int:
        with self._cond:
            return sum(1 for item in self.seen if predicate(item))

    # callbacks with ivy-python's signatures
    def app(self, agent: IvyClient, event: int) -> None:
        self.add("app", agent, event)

    def regexp(self, agent: IvyClient, event: int, num_id: int, regexp: str) -> None:
        self.add("regexp", agent, event, num_id, regexp)

    def direct(self, agent: IvyClient, num_id: int, msg: str) -> None:
        self.add("direct", agent, num_id, msg)

    def pong(self, agent: IvyClient, delta: float) -> None:
        self.add("pong", agent, delta)


def make_server(rec: Recorder, name: str = "COMPAT", **kw: Any) -> IvyServer:
    server = IvyServer(name, app_callback=rec.app, usesDaemons=True, host="127.0.0.1", **kw)
    server.bind_regexp_change(rec.regexp)
    server.bind_direct_msg(rec.direct)
    server.bind_pong(rec.pong)
    return server


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def server(port: int, rec: Recorder) -> Iterator[IvyServer]:
    server = make_server(rec)
    server.start(f"127:{port}")
    yield server
    if server.isAlive():
        server.stop()


@pytest.fixture
def peer(port: int, server: IvyServer) -> Iterator[PythonPeer]:
    peer = PythonPeer(port, PEER_NAME, "--bind", r"^hello (\w+) (\w+)")
    try:
        peer.expect("connected", name=server.agent_name)
        yield peer
    finally:
        peer.close()


def connected(rec: Recorder, name: str = PEER_NAME) -> IvyClient:
    item = rec.wait_for(
        lambda i: i[0] == "app" and i[2] == IvyApplicationConnected and i[1].agent_name == name
    )
    client: IvyClient = item[1]
    return client


def subscribed(rec: Recorder, regexp: str, name: str = PEER_NAME) -> tuple[Any, ...]:
    return rec.wait_for(
        lambda i: (
            i[0] == "regexp"
            and i[2] == IvyRegexpAdded
            and i[4] == regexp
            and i[1].agent_name == name
        )
    )


# ------------------------------------------------------------------ interop
def test_messages_both_ways(server: IvyServer, peer: PythonPeer, rec: Recorder) -> None:
    client = connected(rec)
    assert client.agent_name == PEER_NAME
    assert client.ip == "127.0.0.1" and client.port == peer.ready["port"]
    assert str(client) == f"{PEER_NAME}@127.0.0.1:{client.port}"
    assert repr(client) == f"127.0.0.1:{client.port} ({PEER_NAME})"
    subscribed(rec, r"^hello (\w+) (\w+)")
    assert server.get_clients() == [PEER_NAME]
    assert server.get_client_with_name(PEER_NAME) == [client]
    assert server.get_client_bindings(client) == [(0, r"^hello (\w+) (\w+)")]

    # compat → ivy-python, with groups and the count
    assert server.send_msg("hello big world") == 1
    assert peer.expect("msg")["groups"] == ["big", "world"]
    assert server.send_msg("nobody wants this") == 0
    assert server.send_msg("hello to you", to=client) == 1
    assert peer.expect("msg")["groups"] == ["to", "you"]

    # ivy-python → compat
    got: queue.Queue[tuple[Any, ...]] = queue.Queue()
    sub_id = server.bind_msg(lambda agent, *groups: got.put((agent, groups)), r"^BTN (\w+)=(\d+)")
    assert server.get_subscriptions() == [(sub_id, r"^BTN (\w+)=(\d+)")]
    peer.expect("regexp", sender=server.agent_name, action="add", regexp=r"^BTN (\w+)=(\d+)")
    peer.command("send", text="BTN ok=42")
    assert peer.expect("sent")["count"] == 1
    agent, groups = got.get(timeout=TIMEOUT)
    assert groups == ("ok", "42")
    assert agent is client

    # unbinding reaches ivy-python; unknown ids raise KeyError
    assert server.unbind_msg(sub_id) == r"^BTN (\w+)=(\d+)"
    peer.expect("regexp", sender=server.agent_name, action="remove", id=sub_id)
    with pytest.raises(KeyError):
        server.unbind_msg(sub_id)


def test_app_callback_and_regexp_change(server: IvyServer, peer: PythonPeer, rec: Recorder) -> None:
    client = connected(rec)
    peer.command("bind", regexp="^extra (.*)")
    sub_id = peer.expect("bound", regexp="^extra (.*)")["id"]
    item = subscribed(rec, "^extra (.*)")
    assert item[1] is client and item[3] == sub_id
    peer.command("unbind", id=sub_id)
    rec.wait_for(lambda i: i[0] == "regexp" and i[2] == IvyRegexpRemoved and i[3] == sub_id)
    assert (sub_id, "^extra (.*)") not in server.get_client_bindings(client)
    peer.close()
    rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected)
    assert server.get_clients() == []


def test_direct_messages_both_ways(server: IvyServer, peer: PythonPeer, rec: Recorder) -> None:
    client = connected(rec)
    assert server.send_direct_message(PEER_NAME, 7, "to python")
    assert peer.expect("direct") == {
        "event": "direct",
        "sender": server.agent_name,
        "num_id": 7,
        "text": "to python",
    }
    assert not server.send_direct_message("NOBODY", 1, "lost")
    client.send_direct_message(8, "via the client")
    assert peer.expect("direct")["text"] == "via the client"

    peer.command("direct", to=server.agent_name, num_id=3, text="to compat")
    assert peer.expect("direct_sent")["ok"] is True
    item = rec.wait_for(lambda i: i[0] == "direct")
    assert item[1:] == (client, 3, "to compat")


def test_compat_refuses_then_accepts_die(port: int, rec: Recorder) -> None:
    answers = ["refuse", "accept"]

    def on_die(agent: IvyClient, num_id: int) -> str | None:
        answer = answers.pop(0)
        rec.add("die", agent.agent_name, num_id, answer)
        return IVY_SHOULD_NOT_DIE if answer == "refuse" else None

    server = IvyServer("COMPAT", die_callback=on_die, app_callback=rec.app, usesDaemons=True)
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", "^(.*)")
    try:
        connected(rec)
        peer.expect("connected", name="COMPAT")  # it asks for us by name
        peer.command("die", to="COMPAT")
        assert peer.expect("die_sent")["count"] == 1
        assert rec.wait_for(lambda i: i[0] == "die")[1:] == (PEER_NAME, 0, "refuse")
        assert server.isAlive()  # refusing keeps it working
        assert server.send_msg("still here") == 1
        assert peer.expect("msg")["groups"] == ["still here"]
        assert not server.server_termination.is_set()

        peer.command("die", to="COMPAT")
        assert server.server_termination.wait(TIMEOUT)
        assert rec.count(lambda i: i[0] == "die") == 2
        assert not server.isAlive()
        peer.expect("disconnected", name="COMPAT")
        with pytest.raises(IvyIllegalStateError):
            server.stop()
    finally:
        peer.close()
        if server.isAlive():
            server.stop()


def test_compat_kills_ivy_python(server: IvyServer, rec: Recorder, port: int) -> None:
    stubborn = PythonPeer(port, "STUBBORN", "--refuse-die")
    mortal = PythonPeer(port, "MORTAL")
    try:
        connected(rec, "STUBBORN")
        connected(rec, "MORTAL")
        server.get_client_with_name("STUBBORN")[0].send_die_message()
        assert stubborn.expect("die")["refused"] is True
        server.get_client_with_name("MORTAL")[0].send_die_message(num_id=4)
        assert mortal.expect("die") == {
            "event": "die",
            "sender": server.agent_name,
            "num_id": 4,
            "refused": False,
        }
        mortal.expect("stopped")
        rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected)
        assert server.get_clients() == ["STUBBORN"]
    finally:
        stubborn.close()
        mortal.close()


def test_pong_callback(server: IvyServer, peer: PythonPeer, rec: Recorder) -> None:
    client = connected(rec)
    client.send_ping()
    item = rec.wait_for(lambda i: i[0] == "pong")
    assert item[1] is client
    assert isinstance(item[2], float) and 0 <= item[2] < TIMEOUT


def test_ping_without_pong_in_time_is_logged(
    server: IvyServer, peer: PythonPeer, rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PING gives up after PING_TIMEOUT: a warning, and no pong callback."""
    monkeypatch.setattr(compat_server, "PING_TIMEOUT", 0.0)  # expired before any PONG
    warnings: queue.Queue[logging.LogRecord] = queue.Queue()
    handler = logging.handlers.QueueHandler(warnings)
    handler.setLevel(logging.WARNING)
    compat.ivylogger.addHandler(handler)
    try:
        client = connected(rec)
        client.send_ping()
        record = warnings.get(timeout=TIMEOUT)
    finally:
        compat.ivylogger.removeHandler(handler)
    assert record.getMessage().startswith(f"no PONG from {client}")
    monkeypatch.setattr(compat_server, "PING_TIMEOUT", TIMEOUT)
    client.send_ping()  # the late PONG did not upset the connection
    assert rec.wait_for(lambda i: i[0] == "pong")[1] is client
    assert rec.count(lambda i: i[0] == "pong") == 1


def test_ready_message_reaches_ivy_python(port: int, rec: Recorder) -> None:
    server = IvyServer("COMPAT", ready_msg="hello compat ready", usesDaemons=True)
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", r"^hello (\w+) (\w+)")
    try:
        assert peer.expect("msg")["groups"] == ["compat", "ready"]
    finally:
        peer.close()
        server.stop()


# ------------------------------------------------------------ compat alone
def test_stop_then_stop_again(port: int, rec: Recorder) -> None:
    server = make_server(rec)
    assert not server.isAlive()
    with pytest.raises(IvyIllegalStateError):
        server.stop()
    server.start(f"127:{port}")
    assert server.isAlive() and server.port > 0 and server.agent_id
    assert server.ivybus == ("127.255.255.255", port)
    with pytest.raises(IvyIllegalStateError):
        server.start(f"127:{port}")
    server.stop()
    assert not server.isAlive()
    assert server.server_termination.is_set()
    assert server.ivybus is None
    with pytest.raises(IvyIllegalStateError):
        server.stop()
    assert server.send_msg("anything") == 0
    assert server.get_clients() == []


def test_two_compat_servers_talk(port: int) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = make_server(rec_a, "ALPHA")
    b = make_server(rec_b, "BETA")
    got_a: queue.Queue[tuple[str, ...]] = queue.Queue()
    got_b: queue.Queue[tuple[str, ...]] = queue.Queue()
    a.bind_msg(lambda agent, *g: got_a.put((agent.agent_name, *g)), "^to alpha (.*)")

    def answer(agent: IvyClient, text: str) -> None:
        got_b.put((text,))
        b.send_msg(f"to alpha re {text}")  # from the bus thread: the direct-call path

    b.bind_msg(answer, "^to beta (.*)")
    a.start(f"127:{port}")
    b.start(f"127:{port}")
    try:
        subscribed(rec_a, "^to beta (.*)", "BETA")
        subscribed(rec_b, "^to alpha (.*)", "ALPHA")
        assert a.send_msg("to beta one") == 1
        assert got_b.get(timeout=TIMEOUT) == ("one",)
        assert got_a.get(timeout=TIMEOUT) == ("BETA", "re one")
        assert b.send_direct_message("ALPHA", 5, "psst")
        assert rec_a.wait_for(lambda i: i[0] == "direct")[2:] == (5, "psst")
        b.stop()
        rec_a.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected)
    finally:
        for server in (a, b):
            if server.isAlive():
                server.stop()


def test_timer_ticks_nbticks_times(server: IvyServer, rec: Recorder) -> None:
    threads: set[int] = set()

    def tick(timer: IvyTimer) -> None:
        threads.add(threading.get_ident())
        rec.add("tick", timer.id)

    timer = IvyTimer(server, 3, 5, tick)
    timer.start()
    timer.join(TIMEOUT)
    assert not timer.is_alive()
    assert rec.count(lambda i: i[0] == "tick") == 3
    assert threading.get_ident() not in threads  # ticks run in the bus thread


def test_timer_abort_and_delay(server: IvyServer, rec: Recorder) -> None:
    def tick(timer: IvyTimer) -> None:
        rec.add("tick")
        if rec.count(lambda i: i[0] == "tick") == 3:
            timer.abort = True  # from the bus thread

    timer = IvyTimer(server, 0, 5, tick)
    timer.start()
    timer.join(TIMEOUT)
    assert not timer.is_alive()
    assert rec.count(lambda i: i[0] == "tick") == 3

    endless = IvyTimer(server, 0, 1000, lambda t: rec.add("slow"))
    endless.start()
    rec.wait_for(lambda i: i[0] == "slow")  # the first tick is immediate
    endless.delay = 5  # after the next tick... which is 1 s away: abort first
    endless.abort = True  # from another thread
    endless.join(TIMEOUT)
    assert not endless.is_alive()
    assert rec.count(lambda i: i[0] == "slow") == 1


def test_timer_ends_with_its_server(port: int, rec: Recorder) -> None:
    server = make_server(rec)
    server.start(f"127:{port}")
    timer = IvyTimer(server, 0, 5, lambda t: rec.add("tick"))
    timer.start()
    rec.wait_for(lambda i: i[0] == "tick")
    server.stop()
    timer.join(TIMEOUT)
    assert not timer.is_alive()
    late = IvyTimer(server, 0, 5, lambda t: rec.add("late"))
    late.start()  # on a stopped server: ends at once
    assert not late.is_alive()
    assert rec.count(lambda i: i[0] == "late") == 0


def test_bindings_made_before_start_are_kept(port: int) -> None:
    got: queue.Queue[str] = queue.Queue()
    a = IvyServer("EARLY", usesDaemons=True)
    first = a.bind_msg(lambda agent, text: got.put(text), "^early (.*)")
    dropped = a.bind_msg(lambda agent: None, "^dropped")
    assert a.unbind_msg(dropped) == "^dropped"
    rec_b = Recorder()
    b = make_server(rec_b, "SENDER")
    a.start(f"127:{port}")
    b.start(f"127:{port}")
    try:
        subscribed(rec_b, "^early (.*)", "EARLY")
        assert b.send_msg("early bird") == 1
        assert got.get(timeout=TIMEOUT) == "bird"
        assert a.get_subscriptions() == [(first, "^early (.*)")]
    finally:
        a.stop()
        b.stop()


def test_an_empty_bus_string_means_the_default_as_in_ivy_python(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ivy-python reads "" as $IVYBUS then the default; trivy's own API refuses it."""
    monkeypatch.setenv("IVYBUS", f"127:{port}")
    server = IvyServer("COMPAT", usesDaemons=True)
    server.start("")
    try:
        assert server.ivybus == ("127.255.255.255", port)
    finally:
        server.stop()


# ------------------------------------------------------- module functions
def test_decode_ivybus_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVYBUS", "10.1:3456")
    assert compat.decode_ivybus(None) == ("10.1.255.255", 3456)
    assert compat.decode_ivybus("") == ("10.1.255.255", 3456)
    monkeypatch.delenv("IVYBUS")
    assert compat.decode_ivybus(None) == ("127.255.255.255", 2010)


def test_module_functions() -> None:
    assert compat.decode_ivybus("192.168.12:2010") == ("192.168.12.255", 2010)
    assert compat.encode_message(compat.MSG, 3, ["a", "b"]) == b"2 3\x02a\x03b\x03\n"
    assert compat.encode_message(compat.DIRECT_MSG, 1, "x") == b"7 1\x02x\n"
    assert compat.decode_msg("2 3\x02a\x03b\x03") == (compat.MSG, 3, ["a", "b"])
    assert compat.decode_msg("2 3\x02a") == (compat.MSG, 3, ["a"])
    assert compat.decode_msg("1 4\x02^re$") == (compat.ADD_REGEXP, 4, ["^re$"])
    assert compat.decode_MSG_params("") == []
    with pytest.raises(compat.IvyMalformedMessage):
        compat.decode_msg("x y\x02")
    assert compat.is_multicast("239.1.2.3") and not compat.is_multicast("127.0.0.1")
    assert compat.void_function(1, 2, x=3) is None
    assert (compat.START_INIT, compat.END_INIT, compat.PONG) == (6, 5, 10)
    with pytest.raises(NotImplementedError):
        compat.UDP_init_and_listen("127.255.255.255", 2010, None)


# ------------------------------------------------------------ seed example
SEED_EXAMPLE = """
from trivy.compat.ivy import IvyServer

class MyAgent(IvyServer):
  def __init__(self, agent_name):
    IvyServer.__init__(self,agent_name)
    self.start('127.255.255.255:2010')
    self.bind_msg(self.handle_hello, 'hello .*')
    self.bind_msg(self.handle_button, 'BTN ([a-fA-F0-9]+)')

  def handle_hello(self, agent):
    print('[Agent %s] GOT hello from %r'%(self.agent_name, agent))

  def handle_button(self, agent, btn_id):
    print(
      '[Agent %s] GOT BTN button_id=%s from %r'
      % (self.agent_name, btn_id, agent)
    )
    # let's answer!
    self.send_msg('BTN_ACK %s'%btn_id)

a=MyAgent('007')
"""


def test_seed_example_runs(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed's example, its import changed, on a private bus port.

    The bus string is the one other edit: every test keeps to its own port.
    """
    source = SEED_EXAMPLE.replace("127.255.255.255:2010", f"127.255.255.255:{port}")
    namespace: dict[str, Any] = {}
    exec(compile(source, "seed_example", "exec"), namespace)
    agent: IvyServer = namespace["a"]
    rec = Recorder()
    tester = make_server(rec, "SEEDTESTER")
    acks: queue.Queue[str] = queue.Queue()
    tester.bind_msg(lambda who, btn: acks.put(btn), "^BTN_ACK (.*)")
    try:
        tester.start(f"127.255.255.255:{port}")
        subscribed(rec, "BTN ([a-fA-F0-9]+)", "007")
        assert tester.send_msg("hello there") == 1
        assert tester.send_msg("BTN 1f") == 1
        assert acks.get(timeout=TIMEOUT) == "1f"
    finally:
        tester.stop()
        agent.stop()
    out = capsys.readouterr().out
    assert "[Agent 007] GOT hello from 127.0.0.1:" in out
    assert "[Agent 007] GOT BTN button_id=1f from" in out


# ------------------------------------------------------------------ std_api
def test_std_api(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from trivy.compat import std_api

    monkeypatch.setattr(std_api, "_IvyServer", None)  # the module's one agent, per test
    got: queue.Queue[tuple[str, ...]] = queue.Queue()
    rec = Recorder()
    other = make_server(rec, "OTHER")
    other.bind_msg(lambda agent, text: got.put(("other", text)), "^stdapi (.*)")
    other.start(f"127:{port}")
    conn = Recorder()
    std_api.IvyInit("STDAPI", "stdapi ready", 0, conn.app, lambda agent, num_id: None)
    assert isinstance(std_api._IvyServer, IvyServer)  # (ivy-python's name for it)
    with pytest.raises(IvyIllegalStateError):
        std_api.IvyInit("TWICE")
    std_api.IvyBindMsg(lambda agent, *groups: got.put(groups), "^cmd (.*)")
    std_api.IvyStart(f"127:{port}")
    try:
        subscribed(rec, "^cmd (.*)", "STDAPI")
        assert got.get(timeout=TIMEOUT) == ("other", "ready")  # the ready message
        assert other.send_msg("cmd go") == 1
        assert got.get(timeout=TIMEOUT) == ("go",)
        client = connected(conn, "OTHER")
        assert std_api.IvyGetApplication("OTHER") == client
        assert std_api.IvyGetApplicationList() == ["OTHER"]
        assert std_api.IvyGetApplicationName(client) == "OTHER"
        assert std_api.IvyGetApplicationMessages(client) == [(0, "^stdapi (.*)")]
        assert std_api.IvyGetMessages() == [(0, "^cmd (.*)")]
        assert std_api.IvySendMsg("stdapi hi") == 1
        assert got.get(timeout=TIMEOUT) == ("other", "hi")
        std_api.IvySendDirectMsg(client, 2, "direct")
        assert rec.wait_for(lambda i: i[0] == "direct")[2:] == (2, "direct")
        ticks = Recorder()
        timer_id = std_api.IvyTimerRepeatAfter(0, 5, lambda: ticks.add("tick"))
        ticks.wait_for(lambda i: True)
        std_api.IvyTimerModify(timer_id, 10)
        std_api.IvyTimerRemove(timer_id)
        assert std_api.IvyUnbindMsg(0) == "^cmd (.*)"
    finally:
        std_api.IvyStop()
        other.stop()


def test_bindings_made_before_start_get_the_ready_message_every_time(port: int) -> None:
    """Each bus in its own thread: a peer may connect the instant we announce.

    The bindings made before ``start()`` must be in our handshake all the
    same, or the peer's ready message (sent through the subscriptions it
    knows) is lost.
    """
    old = IvyServer("OLD", ready_msg="OLD READY", usesDaemons=True, host="127.0.0.1")
    old.start(f"127:{port}")
    got: queue.Queue[str] = queue.Queue()
    try:
        for _ in range(20):
            new = IvyServer("NEW", usesDaemons=True, host="127.0.0.1")
            new.bind_msg(lambda agent, word: got.put(word), "^OLD (READY)")
            new.start(f"127:{port}")
            try:
                assert got.get(timeout=TIMEOUT) == "READY"
            finally:
                new.stop()
            assert got.empty()  # once per connection
    finally:
        old.stop()

"""trivy.compat.ivy: every name ivy-python's documentation lists, and the
handle_* methods that subclasses override (synchronous tests, real sockets)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import trivy
from trivy.compat.ivy import (
    IVY_SHOULD_NOT_DIE,
    ClientsBinding,
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyClient,
    IvyRegexpAdded,
    IvyRegexpRemoved,
    IvyServer,
    IvyTimer,
)

from .conftest import free_udp_port
from .test_compat import PEER_NAME, PythonPeer, Recorder, make_server

#: Every name of ivy-python's ``ivy.ivy`` in its documentation: module-level
#: names, and each class's methods and attributes.
SEED_NAMES: dict[str, tuple[str, ...]] = {
    "ClientsBinding": ("clients", "pattern", "regexp"),
    "IvyClient": (
        "end_init",
        "get_next_ping_delta",
        "get_next_ping_delta_ns",
        "remove_subscription",
        "send_die_message",
        "send_direct_message",
        "send_error",
        "send_message",
        "send_new_subscription",
        "send_ping",
        "send_pong",
        "start_init",
        "wave_bye",
    ),
    "IvyHandler": ("handle", "process_ivymessage", "server"),
    "IvyIllegalStateError": (),
    "IvyMalformedMessage": (),
    "IvyProtocolError": (),
    "IvyServer": (
        "add_client_binding",
        "bind_direct_msg",
        "bind_msg",
        "bind_pong",
        "bind_regexp_change",
        "get_client",
        "get_client_bindings",
        "get_client_with_name",
        "get_clients",
        "get_subscriptions",
        "handle_die_message",
        "handle_direct_msg",
        "handle_msg",
        "handle_new_client",
        "handle_pong",
        "handle_regexp_change",
        "isAlive",
        "ivybus",
        "port",
        "register_client",
        "remove_client",
        "remove_client_binding",
        "run_callback",
        "send_direct_message",
        "send_msg",
        "send_ready_message",
        "serve_forever",
        "server_termination",
        "start",
        "stop",
        "unbind_msg",
        "usesDaemons",
    ),
    "IvyTimer": ("callback", "delay", "id", "nbticks", "run"),
    "UDP_init_and_listen": (),
    "decode_MSG_params": (),
    "decode_ivybus": (),
    "decode_msg": (),
    "encode_message": (),
    "is_multicast": (),
    "trace": (),
    "void_function": (),
}
#: ...and its constants and logging objects.
SEED_CONSTANTS = (
    "BYE", "ADD_REGEXP", "MSG", "ERROR", "DEL_REGEXP", "END_REGEXP", "END_INIT",
    "START_REGEXP", "START_INIT", "DIRECT_MSG", "DIE", "ARG_START", "ARG_END",
    "DEFAULT_IVYBUS", "PROTOCOL_VERSION", "IVY_SHOULD_NOT_DIE", "IvyApplicationConnected",
    "IvyApplicationDisconnected", "DEFAULT_TTL", "ivylogger", "debug", "log", "warn", "error",
    "ivy_loghdlr", "ivy_logformatter",
)  # fmt: skip


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_every_name_of_ivy_pythons_module_exists() -> None:
    import trivy.compat.ivy as compat

    server = IvyServer("NAMES")
    instances: dict[str, Any] = {
        "IvyServer": server,
        "IvyTimer": IvyTimer(server, 1, 100, lambda timer: None),
        "IvyClient": IvyClient(server, trivy.Peer(name="X", host="127.0.0.1", port=1)),
        "ClientsBinding": ClientsBinding(re.compile("^x")),
    }
    missing = [name for name in SEED_CONSTANTS if not hasattr(compat, name)]
    for owner, members in SEED_NAMES.items():
        if not hasattr(compat, owner):
            missing.append(owner)
            continue
        target = instances.get(owner, getattr(compat, owner))
        missing += [f"{owner}.{member}" for member in members if not hasattr(target, member)]
    assert missing == []
    total = len(SEED_CONSTANTS) + len(SEED_NAMES) + sum(map(len, SEED_NAMES.values()))
    assert total == 98


class Overriding(IvyServer):
    """A subclass in ivy-python's style: every handle_* records, then defers."""

    def __init__(self, seen: list[tuple[Any, ...]], *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen = seen
        self.lock = threading.Lock()

    def _note(self, *item: Any) -> None:
        with self.lock:
            self.seen.append(item)

    def handle_msg(self, client: IvyClient, idx: int, *params: Any) -> None:
        self._note("handle_msg", client.agent_name, idx, params)
        super().handle_msg(client, idx, *params)

    def handle_new_client(self, client: IvyClient) -> None:
        self._note("handle_new_client", client.agent_name)
        super().handle_new_client(client)

    def remove_client(self, ip: str, port: int, trigger_application_callback: bool = True) -> Any:
        client = super().remove_client(ip, port, trigger_application_callback)
        self._note("remove_client", client.agent_name if client else None)
        return client

    def handle_regexp_change(self, client: IvyClient, event: int, num_id: int, regexp: str) -> None:
        self._note("handle_regexp_change", event, regexp)
        super().handle_regexp_change(client, event, num_id, regexp)

    def handle_direct_msg(self, client: IvyClient, num_id: int, msg: str) -> None:
        self._note("handle_direct_msg", num_id, msg)
        super().handle_direct_msg(client, num_id, msg)

    def handle_pong(self, client: IvyClient, delta: float) -> None:
        self._note("handle_pong", client.agent_name)
        super().handle_pong(client, delta)

    def handle_die_message(self, msg_id: int, from_client: IvyClient) -> bool:
        self._note("handle_die_message", msg_id)
        return super().handle_die_message(msg_id, from_client)


def test_a_subclass_overriding_handle_methods_still_sees_everything(
    port: int, rec: Recorder
) -> None:
    seen: list[tuple[Any, ...]] = []
    server = Overriding(
        seen,
        "SUB",
        app_callback=rec.app,
        die_callback=lambda agent, num_id: IVY_SHOULD_NOT_DIE,
        usesDaemons=True,
        host="127.0.0.1",
    )
    server.bind_regexp_change(rec.regexp)
    server.bind_direct_msg(rec.direct)
    server.bind_pong(rec.pong)
    sub_id = server.bind_msg(lambda agent, *groups: rec.add("msg", agent, *groups), r"^hi (\w+)")
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", "^from (.*)")
    try:
        client = rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationConnected)[1]
        rec.wait_for(lambda i: i[0] == "regexp" and i[2] == IvyRegexpAdded)
        assert server.get_client_bindings(client) == [(0, "^from (.*)")]
        peer.expect("connected", name="SUB")
        peer.command("send", text="hi there")
        rec.wait_for(lambda i: i[0] == "msg" and i[2] == "there")  # the default still runs
        peer.command("direct", to="SUB", num_id=5, text="psst")
        rec.wait_for(lambda i: i[0] == "direct" and i[3] == "psst")
        client.send_ping()
        rec.wait_for(lambda i: i[0] == "pong")
        assert client.get_next_ping_delta_ns() is not None  # the PING sent is accounted for
        assert client.get_next_ping_delta() is None
        peer.command("unbind", id=0)
        rec.wait_for(lambda i: i[0] == "regexp" and i[2] == IvyRegexpRemoved)
        assert server.get_client_bindings(client) == []
        peer.command("die", to="SUB")
        peer.expect("die_sent", to="SUB", count=1)
        assert server.register_client(client.ip, client.port, None) is client
    finally:
        peer.close()
    rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected)
    server.stop()
    with server.lock:
        kinds = [item[0] for item in seen]
    assert ("handle_msg", PEER_NAME, sub_id, ("there",)) in seen
    for kind in (
        "handle_new_client",
        "handle_regexp_change",
        "handle_direct_msg",
        "handle_pong",
        "handle_die_message",
        "remove_client",
    ):
        assert kind in kinds, (kind, seen)
    assert server.isAlive() is False


def test_run_callback_serve_forever_clients_binding_and_timer_run(port: int, rec: Recorder) -> None:
    assert IvyServer.run_callback(lambda agent, x: x * 2, "double", None, 21) == 42
    assert IvyServer.run_callback(lambda agent: 1 / 0, "boom", None, on_exc="fallback") == (
        "fallback"
    )
    binding = ClientsBinding(re.compile(r"^x (\d+)"), [])
    assert binding.regexp() == r"^x (\d+)" and binding.clients == []

    server = make_server(rec)
    server.start(f"127:{port}")
    ticks: list[int] = []
    timer = IvyTimer(server, 3, 10, lambda t: ticks.append(t.id))
    timer.run()  # blocks until its three ticks are done
    assert len(ticks) == 3 and not timer.is_alive()
    stopper = threading.Timer(0.2, server.stop)
    stopper.start()
    server.serve_forever()  # returns once the server stopped
    assert server.server_termination.is_set()
    stopper.join()


def test_a_blocking_callback_stalls_neither_pings_nor_timers_nor_order(
    port: int, rec: Recorder
) -> None:
    """Callbacks run on a thread of their own, in order: while one blocks, the
    bus still answers PING, timers still tick, and later messages wait their
    turn rather than being lost or reordered."""
    release = threading.Event()
    server = make_server(rec)

    def blocking(agent: IvyClient) -> None:
        rec.add("blocked")
        release.wait(10)

    server.bind_msg(blocking, "^block$")
    server.bind_msg(lambda agent, n: rec.add("n", int(n)), r"^n (\d+)$")
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME)
    try:
        peer.expect("connected", name=server.agent_name)
        ticks: list[int] = []
        timer = IvyTimer(server, 0, 10, lambda t: (ticks.append(1), rec.add("tick", len(ticks))))
        timer.start()
        peer.command("send", text="block")
        rec.wait_for(lambda i: i[0] == "blocked")
        for n in range(5):
            peer.command("send", text=f"n {n}")
        peer.command("ping", to=server.agent_name)
        assert peer.expect("pong")["sender"] == server.agent_name  # the bus answered
        before = len(ticks)
        rec.wait_for(lambda i: i[0] == "tick" and i[1] >= before + 5)  # the timer ticks on
        assert rec.count(lambda i: i[0] == "n") == 0  # the messages wait their turn
        release.set()
        rec.wait_for(lambda i: i[0] == "n" and i[1] == 4)
        with rec._cond:
            order = [item[1] for item in rec.seen if item[0] == "n"]
        assert order == [0, 1, 2, 3, 4]
        timer.abort = True
        timer.join(5)
        assert not timer.is_alive()
    finally:
        release.set()
        peer.close()
        server.stop()


def test_the_main_loop_survives_sigint_after_the_agent_stopped(tmp_path: Path) -> None:
    """IvyMainLoop's SIGINT handler, once the agent already stopped (a DIE, an
    IvyStop): nothing is raised, the program ends normally."""
    script = tmp_path / "agent.py"
    script.write_text(
        "import os, signal, threading\n"
        "from trivy.compat.std_api import IvyInit, IvyStart, IvyMainLoop, IvyStop\n"
        "IvyInit('LOOP')\n"
        f"IvyStart('127:{free_udp_port()}')\n"
        "def later():\n"
        "    IvyStop()\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "threading.Timer(0.2, later).start()\n"
        "IvyMainLoop()\n"
        "os.kill(os.getpid(), signal.SIGINT)  # again, after the loop\n"
        "print('ended')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ended"
    assert "Traceback" not in result.stderr


def test_connection_comes_before_its_messages_and_a_restart_is_clean(
    port: int, rec: Recorder
) -> None:
    """A peer's ready message (its first text) reaches the callbacks after its
    connection; stop() from a callback, then start() again: one callback thread."""
    server = make_server(rec)
    server.bind_msg(lambda agent, *groups: rec.add("msg", agent, *groups), "^(ready)$")
    server.bind_msg(lambda agent: server.stop(), "^stop$")
    server.start(f"127:{port}")
    for _ in range(5):
        peer = PythonPeer(port, PEER_NAME, "--ready-message", "ready")
        try:
            rec.wait_for(lambda i: i[0] == "msg")
            with rec._cond:
                kinds = [(item[0], item[2] if item[0] == "app" else None) for item in rec.seen]
            assert kinds.index(("app", IvyApplicationConnected)) < kinds.index(("msg", None))
            peer.command("send", text="stop")  # the callback stops the server
            assert server.server_termination.wait(10)
        finally:
            peer.close()
        with rec._cond:
            rec.seen.clear()
        server.start(f"127:{port}")
    server.stop()
    callback_threads = [t for t in threading.enumerate() if "callbacks-COMPAT" in t.name]
    assert callback_threads == []


def test_timer_callbacks_that_send_and_stop_do_not_hang(port: int, rec: Recorder) -> None:
    server = make_server(rec)
    server.start(f"127:{port}")
    sent: list[int] = []
    timer = IvyTimer(server, 3, 1, lambda t: sent.append(server.send_msg("tick")))
    timer.start()
    timer.join(10)
    assert sent == [0, 0, 0] and not timer.is_alive()
    assert server.get_clients() == []  # the bus answers
    stopper = IvyTimer(server, 1, 1, lambda t: server.stop())
    stopper.start()
    assert server.server_termination.wait(10)
    stopper.join(10)
    assert not stopper.is_alive()

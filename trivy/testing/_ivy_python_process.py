"""A real ivy-python agent driven through stdin/stdout (see :func:`trivy.testing.ivy_python_agent`).

Run as a separate process (ivy-python is thread-based, trivy is trio-based:
they must not share a process)::

    python -m trivy.testing._ivy_python_process --bus 127:PORT --name NAME \
        [--refuse-die] [--bind REGEXP]... [--ready-message TEXT]

Commands are read from stdin, one JSON object per line, for example
``{"cmd": "bind", "regexp": "^hello (.*)"}``:

========== ============================== =====================================
cmd        fields                         answer (event)
========== ============================== =====================================
bind       regexp, [busy seconds]         ``bound`` id, regexp
unbind     id                             ``unbound`` id, regexp
send       text                           ``sent`` text, count (send_msg)
direct     to, num_id, text               ``direct_sent`` to, ok
die        to                             ``die_sent`` to, count
ping       to                             ``ping_sent`` to, count
clients                                   ``clients`` clients: [{name, bindings}]
stop                                      ``stopped`` (then the process exits 0)
========== ============================== =====================================

Everything is reported on stdout, one JSON object per line, with an
``event`` key. Besides the answers above: ``ready`` (port, agent_id,
announced), ``msg`` (id, groups, sender), ``connected``/``disconnected``
(name), ``direct`` (sender, num_id, text), ``die`` (sender, num_id,
refused), ``pong`` (sender, delta), ``regexp`` (sender, action "add" or
"remove", id, regexp), ``error`` (message). When the agent accepts a DIE its
server stops, ``stopped`` is reported and the process exits with code 0.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ivy.ivy import (
    IVY_SHOULD_NOT_DIE,
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyClient,
    IvyRegexpAdded,
    IvyServer,
)

#: Seconds to wait for our own UDP announce to come back before reporting
#: ``ready`` anyway.
ANNOUNCE_TIMEOUT = 5.0

_output_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one event as a JSON line on stdout (from any thread)."""
    line = json.dumps({"event": event, **fields})
    with _output_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # the test is gone
            pass


class PeerServer(IvyServer):
    """An IvyServer that stops quickly and whose threads never keep us alive."""

    daemon_threads = True  # socketserver.ThreadingMixIn: the handler threads

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        """Poll for shutdown every 50 ms rather than 500 ms: stop() is faster."""
        super().serve_forever(poll_interval)


class Peer:
    """The agent, its callbacks and the command interpreter."""

    def __init__(self, name: str, *, refuse_die: bool, ready_message: str) -> None:
        self.refuse_die = refuse_die
        self.server = PeerServer(
            name,
            ready_msg=ready_message,
            app_callback=self.on_app,
            die_callback=self.on_die,
            usesDaemons=True,
        )
        self.server.bind_direct_msg(self.on_direct)
        self.server.bind_regexp_change(self.on_regexp_change)
        self.server.bind_pong(self.on_pong)
        # Held while binding, so that a callback never runs before its id is known.
        self._bind_lock = threading.Lock()

    # ------------------------------------------------------------ callbacks
    @staticmethod
    def on_app(client: IvyClient, event: int) -> None:
        if event == IvyApplicationConnected:
            emit("connected", name=client.agent_name)
        elif event == IvyApplicationDisconnected:
            emit("disconnected", name=client.agent_name)

    def on_die(self, client: IvyClient, num_id: int) -> str | None:
        emit("die", sender=client.agent_name, num_id=num_id, refused=self.refuse_die)
        return IVY_SHOULD_NOT_DIE if self.refuse_die else None

    @staticmethod
    def on_direct(client: IvyClient, num_id: int, text: str) -> None:
        emit("direct", sender=client.agent_name, num_id=num_id, text=text)

    @staticmethod
    def on_regexp_change(client: IvyClient, event: int, num_id: int, regexp: str) -> None:
        action = "add" if event == IvyRegexpAdded else "remove"
        name = client.agent_name
        emit("regexp", sender=name, action=action, id=num_id, regexp=regexp)

    @staticmethod
    def on_pong(client: IvyClient, delta: float) -> None:
        emit("pong", sender=client.agent_name, delta=delta)

    # ------------------------------------------------------------- commands
    def bind(self, regexp: str, busy: float = 0.0) -> int:
        """Bind ``regexp``; each match is reported as a ``msg`` event.

        With ``busy``, the callback first blocks for that many seconds (the
        thread serving the sender: it answers nothing meanwhile).
        """
        holder: dict[str, int] = {}

        def on_msg(client: IvyClient, *groups: str) -> None:
            if busy:
                time.sleep(busy)
            with self._bind_lock:
                binding_id = holder["id"]
            emit("msg", id=binding_id, groups=list(groups), sender=client.agent_name)

        with self._bind_lock:
            holder["id"] = self.server.bind_msg(on_msg, regexp)
        emit("bound", id=holder["id"], regexp=regexp)
        return holder["id"]

    def run_command(self, command: dict[str, Any]) -> bool:
        """Execute one command; False when the agent must stop."""
        cmd = command.get("cmd")
        server = self.server
        if cmd == "bind":
            self.bind(command["regexp"], float(command.get("busy", 0.0)))
        elif cmd == "unbind":
            regexp = server.unbind_msg(int(command["id"]))
            emit("unbound", id=int(command["id"]), regexp=regexp)
        elif cmd == "send":
            count = server.send_msg(command["text"])
            emit("sent", text=command["text"], count=count)
        elif cmd == "direct":
            ok = server.send_direct_message(command["to"], int(command["num_id"]), command["text"])
            emit("direct_sent", to=command["to"], ok=ok)
        elif cmd == "die":
            clients = server.get_client_with_name(command["to"])
            for client in clients:
                client.send_die_message()
            emit("die_sent", to=command["to"], count=len(clients))
        elif cmd == "ping":
            clients = server.get_client_with_name(command["to"])
            for client in clients:
                client.send_ping()
            emit("ping_sent", to=command["to"], count=len(clients))
        elif cmd == "clients":
            listing = []
            for name in sorted(set(server.get_clients())):
                for client in server.get_client_with_name(name):
                    bindings = sorted(server.get_client_bindings(client))
                    listing.append({"name": name, "bindings": [list(b) for b in bindings]})
            emit("clients", clients=listing)
        elif cmd == "stop":
            return False
        else:
            emit("error", message=f"unknown command {command!r}")
        return True


def wait_for_own_announce(udp: socket.socket, agent_id: str) -> bool:
    """Wait until our announce comes back: ivy-python's UDP socket is then bound."""
    deadline = time.monotonic() + ANNOUNCE_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        udp.settimeout(left)
        try:
            data = udp.recv(1024)
        except (TimeoutError, OSError):
            return False
        if agent_id.encode() in data:
            return True
    return False


def watch(event: threading.Event, commands: queue.Queue[dict[str, Any] | None]) -> None:
    """Tell the main thread (through ``commands``) when the server stopped."""
    event.wait()
    commands.put(None)


def read_commands(commands: queue.Queue[dict[str, Any] | None]) -> None:
    """Queue the JSON commands read from stdin; None at end of input."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            commands.put(json.loads(line))
        except json.JSONDecodeError as exc:
            emit("error", message=f"bad command {line!r}: {exc}")
    commands.put(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", required=True, help="NETWORKS:PORT")
    parser.add_argument("--name", required=True, help="our agent name")
    parser.add_argument("--refuse-die", action="store_true", help="refuse DIE")
    parser.add_argument("--bind", action="append", default=[], help="bind at start")
    parser.add_argument("--ready-message", default="", help="ivy-python ready_msg")
    args = parser.parse_args(argv)

    peer = Peer(args.name, refuse_die=args.refuse_die, ready_message=args.ready_message)
    for regexp in args.bind:
        peer.bind(regexp)

    # A second socket on the bus port sees our own announce: once it comes
    # back, ivy-python's UDP thread is listening and later agents find us.
    bus_port = int(args.bus.rsplit(":", 1)[1])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.bind(("", bus_port))
    try:
        peer.server.start(args.bus)
        announced = wait_for_own_announce(udp, peer.server.agent_id)
    finally:
        udp.close()

    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    stopped = peer.server.server_termination
    threading.Thread(target=watch, args=(stopped, commands), daemon=True).start()
    emit(
        "ready",
        port=peer.server.port,
        agent_id=peer.server.agent_id,
        announced=announced,
    )

    run: Callable[[dict[str, Any]], bool] = peer.run_command
    while (command := commands.get()) is not None:
        try:
            if not run(command):
                break
        except Exception as exc:  # report, keep serving
            emit("error", message=f"{command!r}: {type(exc).__name__}: {exc}")
    if not stopped.is_set():  # not after an accepted DIE: it stopped already
        try:
            peer.server.stop()
        except Exception as exc:  # e.g. a DIE stopped it meanwhile
            emit("error", message=f"stop: {type(exc).__name__}: {exc}")
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two sites joined through a real MQTT broker (mosquitto, started here).

Each site is a bus of its own (its own UDP port, as two LANs would be),
with its own bridge; every agent sees the other site's agents as agents
of the bus, with their names and regexps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trivy
from trivy.bridge import BridgeConflict, BridgeOptions, MqttError, run_bridge
from trivy.bridge._mqtt import open_mqtt
from trivy.bridge._site import MAX_PAYLOAD
from trivy.testing import ivy_python_agent, wait_for_subscription

from .conftest import free_udp_port
from .heartbeat import Heartbeat

TIMEOUT = 15


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """A mosquitto broker on a free loopback port, with a private config."""

    def __init__(self, directory: Path, config: str = "") -> None:
        self.port = _free_tcp_port()
        self._config = directory / "mosquitto.conf"
        # (queues raised as the how-to advises: mosquitto drops past 1,000 a client)
        self._config.write_text(
            config
            or f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
        )
        with self._config.open("a") as file:
            file.write("log_dest stderr\nlog_type all\n")
            if os.getuid() == 0:  # (else it drops to a user who cannot read the test's files)
                file.write("user root\n")
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start it; return once it says it runs (its listener is open)."""
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        process = subprocess.Popen(
            [mosquitto, "-c", str(self._config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None  # (its log: stderr, which it does not buffer)
        for line in process.stderr:
            if "running" in line:
                break
        else:
            raise AssertionError(f"mosquitto did not start (exit {process.wait()})")
        threading.Thread(target=process.stderr.read, daemon=True).start()  # (keeps it read)
        self._process = process

    def pause(self, paused: bool = True) -> None:
        """Freeze it (SIGSTOP: a broker that reads nothing), or thaw it."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """Stop it (SIGTERM); it keeps nothing (no persistence)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
            self._process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto, that a test may restart."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(mosquitto: Mosquitto) -> int:
    """A running mosquitto's port."""
    return mosquitto.port


def sites(broker: int, *names: str, **options: Any) -> list[BridgeOptions]:
    """Buses (one UDP port each, as separate LANs) and their bridges' options."""
    return [
        BridgeOptions(bus=f"127:{free_udp_port()}", broker_port=broker, site=name, **options)
        for name in names
    ]


def two_sites(broker: int) -> tuple[str, str, list[BridgeOptions]]:
    """Two buses and their bridges' options."""
    options = sites(broker, "one", "two")
    return str(options[0].bus), str(options[1].bus), options


async def test_two_sites_see_each_others_agents_and_texts(broker: int) -> None:
    bus_one, bus_two = f"127:{free_udp_port()}", f"127:{free_udp_port()}"
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bus_one) as alice,
            trivy.open_ivy_bus("BOB", bus_two) as bob,
            trio.open_nursery() as nursery,
        ):
            hello = alice.subscribe("^hello (.*)")
            nursery.start_soon(
                run_bridge, BridgeOptions(bus=bus_one, broker_port=broker, site="one")
            )
            nursery.start_soon(
                run_bridge, BridgeOptions(bus=bus_two, broker_port=broker, site="two")
            )
            # ALICE appears on BOB's bus, with her regexp
            await wait_for_subscription(bob, "ALICE", "^hello (.*)")
            assert await bob.send("hello world") == 1
            match = await hello.receive()
            assert match.groups == ("world",)
            assert match.peer.name == "BOB"  # the sender's name, on ALICE's side
            # direct messages cross, from the sender's name
            async with bob.direct_messages() as directs:
                alice.send_direct(await alice.wait_for_peer("BOB"), 7, "psst")
                direct = await directs.receive()
                assert (direct.peer.name, direct.num_id, direct.text) == ("ALICE", 7, "psst")
            # subscriptions follow live
            async with bob.events() as events:
                alice.unbind(hello.id)
                while True:
                    event = await events.receive()
                    if isinstance(event, trivy.SubscriptionRemoved) and event.peer.name == "ALICE":
                        break
            assert await bob.send("hello again") == 0
            nursery.cancel_scope.cancel()


async def test_an_agent_leaving_leaves_the_other_site(broker: int) -> None:
    bus_one, bus_two = f"127:{free_udp_port()}", f"127:{free_udp_port()}"
    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("BOB", bus_two) as bob, trio.open_nursery() as nursery:
            nursery.start_soon(
                run_bridge, BridgeOptions(bus=bus_one, broker_port=broker, site="one")
            )
            nursery.start_soon(
                run_bridge, BridgeOptions(bus=bus_two, broker_port=broker, site="two")
            )
            async with bob.events() as events:
                async with trivy.open_ivy_bus("CAROL", bus_one):
                    await bob.wait_for_peer("CAROL")
                while True:
                    event = await events.receive()
                    if isinstance(event, trivy.PeerDisconnected) and event.peer.name == "CAROL":
                        break
            assert bob.peer("CAROL") is None
            nursery.cancel_scope.cancel()


async def test_no_broker_is_one_clear_error() -> None:
    options = BridgeOptions(bus=f"127:{free_udp_port()}", broker_port=_free_tcp_port(), site="x")
    with trio.fail_after(TIMEOUT), pytest.raises(MqttError, match="cannot reach the MQTT broker"):
        await run_bridge(options)


async def test_the_command_bridges_a_site(broker: int) -> None:
    """``python -m trivy bridge`` against the broker: a text crosses, the
    command says it runs and leaves on SIGINT with 130."""
    bus_one, bus_two, bridges = two_sites(broker)
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bus_one) as alice,
            trivy.open_ivy_bus("BOB", bus_two) as bob,
            trio.open_nursery() as nursery,
        ):
            hello = alice.subscribe("^hello (.*)")
            nursery.start_soon(run_bridge, bridges[0])
            command = [
                sys.executable, "-m", "trivy", "bridge", "-b", bus_two,
                "--broker", f"mqtt://127.0.0.1:{broker}", "--site", "two",
            ]  # fmt: skip
            process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
            assert process.stderr is not None
            said = b""
            try:
                await wait_for_subscription(bob, "ALICE", "^hello (.*)")
                assert await bob.send("hello command") == 1
                assert (await hello.receive()).groups == ("command",)
                # (the bridge relays as it goes live; its line follows within
                # a few scheduler passes of its own)
                while b"\n" not in said and (chunk := await process.stderr.receive_some()):
                    said += chunk
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
            finally:
                process.kill()
            line = said.decode()
            assert line.startswith("trivy: bridging site 'two' through 127.0.0.1:"), line
            nursery.cancel_scope.cancel()


async def test_the_command_without_a_broker_says_so_in_one_line() -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "trivy", "bridge", "-b", f"127:{free_udp_port()}",
         "--broker", f"mqtt://127.0.0.1:{_free_tcp_port()}", "--site", "x"],
        capture_stderr=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "cannot reach the MQTT broker" in lines[0], lines


async def test_three_sites_deliver_every_text_exactly_once(broker: int) -> None:
    bridges = sites(broker, "one", "two", "three")
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bridges[0].bus) as alice,
            trivy.open_ivy_bus("BOB", bridges[1].bus) as bob,
            trivy.open_ivy_bus("CAROL", bridges[2].bus) as carol,
            trio.open_nursery() as nursery,
        ):
            heard = {name: agent.subscribe("^tick (.*)") for name, agent in
                     (("ALICE", alice), ("BOB", bob), ("CAROL", carol))}  # fmt: skip
            for options in bridges:
                nursery.start_soon(run_bridge, options)
            for agent, others in ((alice, ("BOB", "CAROL")), (bob, ("ALICE", "CAROL")),
                                  (carol, ("ALICE", "BOB"))):  # fmt: skip
                for name in others:
                    await wait_for_subscription(agent, name, "^tick (.*)")
            agents = {"ALICE": alice, "BOB": bob, "CAROL": carol}
            for n in range(5):
                assert await alice.send(f"tick {n}") == 2  # BOB's proxy and CAROL's
            assert await bob.send("tick end") == 2
            for name, agent in agents.items():  # each sender's last text: a mark
                assert await agent.send(f"tick mark-{name}") == 2
            # Texts of one sender keep their order, whatever the paths: once a
            # receiver has both marks, a duplicate would have come before them.
            for name in agents:
                got: list[tuple[str, str]] = []
                marks = {f"mark-{other}" for other in agents if other != name}
                while marks - {text for _, text in got}:
                    match = await heard[name].receive()
                    got.append((match.peer.name, match.groups[0]))
                expected = [(sender, f"mark-{sender}") for sender in agents if sender != name]
                if name != "ALICE":
                    expected += [("ALICE", str(n)) for n in range(5)]
                if name != "BOB":
                    expected.append(("BOB", "end"))
                assert sorted(got) == sorted(expected), (name, got)
                alice_texts = [text for sender, text in got if sender == "ALICE"]
                assert alice_texts == sorted(alice_texts, key=lambda t: (t.startswith("m"), t))
            nursery.cancel_scope.cancel()


async def _error_received(bus: trivy.IvyBus, events: trivy.EventStream) -> trivy.ErrorReceived:  # type: ignore[type-arg]
    while True:
        event = await events.receive()
        if isinstance(event, trivy.ErrorReceived):
            return event


@pytest.mark.parametrize("allow_die", [False, True])
async def test_errors_cross_and_die_only_when_allowed(broker: int, allow_die: bool) -> None:
    bridges = sites(broker, "one", "two", allow_die=allow_die)
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bridges[0].bus) as alice,
            trivy.open_ivy_bus("BOB", bridges[1].bus) as bob,
            trio.open_nursery() as nursery,
        ):
            for options in bridges:
                nursery.start_soon(run_bridge, options)
            proxy_of_bob = await alice.wait_for_peer("BOB")
            async with bob.events() as events:
                alice.send_error(proxy_of_bob, 3, "not for me")
                error = await _error_received(bob, events)
                assert (error.peer.name, error.num_id, error.text) == ("ALICE", 3, "not for me")
                alice.send_die(proxy_of_bob)
                if allow_die:
                    await trio.sleep_forever()  # BOB obeys: its bus leaves, ending this block
                alice.send_error(proxy_of_bob, 4, "still here")  # refused: BOB stays
                assert (await _error_received(bob, events)).num_id == 4
                assert proxy_of_bob in alice.peers  # (and so does its proxy)
            nursery.cancel_scope.cancel()
    assert bob.running is False


async def test_an_ivy_python_agent_talks_across_the_bridge(broker: int) -> None:
    """A real ivy-python agent on one site, a trivy agent on the other: texts
    both ways, each with the sender's name and groups."""
    bridges = sites(broker, "one", "two")
    with trio.fail_after(TIMEOUT):
        async with (
            ivy_python_agent(str(bridges[0].bus), "PYAGENT", bind=[r"^hello (\w+) (\w+)"]) as py,
            trivy.open_ivy_bus("BOB", bridges[1].bus) as bob,
            trio.open_nursery() as nursery,
        ):
            from_py = bob.subscribe("^from py (.*)")
            for options in bridges:
                nursery.start_soon(run_bridge, options)
            await wait_for_subscription(bob, "PYAGENT", r"^hello (\w+) (\w+)")
            assert await bob.send("hello big world") == 1
            msg = await py.expect("msg")
            assert (msg["sender"], msg["groups"]) == ("BOB", ["big", "world"])
            await py.expect("regexp", sender="BOB", regexp="^from py (.*)")
            sent = await py.request("send", "sent", text="from py with love")
            assert sent["count"] == 1
            match = await from_py.receive()
            assert (match.peer.name, match.groups) == ("PYAGENT", ("with love",))
            nursery.cancel_scope.cancel()


async def test_a_killed_bridge_takes_its_agents_away_within_the_keepalive(broker: int) -> None:
    """SIGKILL: no BYE, no goodbye message, and the broker's will tells the
    other sites (at once here: the kernel closes the dead process's socket;
    a host that vanishes is declared gone after 1.5 keepalives)."""
    bridges = sites(broker, "one", "two")
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bridges[0].bus) as alice,
            trivy.open_ivy_bus("BOB", bridges[1].bus),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(run_bridge, bridges[0])
            command = [
                sys.executable, "-m", "trivy", "bridge", "-b", str(bridges[1].bus),
                "--broker", f"mqtt://127.0.0.1:{broker}", "--site", "two", "--keepalive", "1",
            ]  # fmt: skip
            process = await trio.lowlevel.open_process(command, stderr=subprocess.DEVNULL)
            try:
                await alice.wait_for_peer("BOB")
                async with alice.events() as events:
                    process.kill()
                    killed = trio.current_time()
                    while True:
                        event = await events.receive()
                        if isinstance(event, trivy.PeerDisconnected) and event.peer.name == "BOB":
                            break
                    gone_after = trio.current_time() - killed
            finally:
                process.kill()
                await process.wait()
            print(f"BOB gone from site one {gone_after:.2f} s after its bridge was killed")
            assert gone_after < 1.5 * 1 + 1.0, gone_after
            nursery.cancel_scope.cancel()


async def test_a_hostile_publisher_costs_a_site_a_bounded_nothing(broker: int) -> None:
    """Anyone who may publish on the broker: an agent whose regexp would take
    seconds to compile, and a 5 MiB message, cost the bridge nothing but a log."""
    bridges = sites(broker, "one")
    slow = "(?i)" + "[\u0000-\uffff]" * 400  # compiling walked 80 M code points
    heartbeat = Heartbeat()
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", bridges[0].bus) as alice,
            open_mqtt("127.0.0.1", broker, client_id="hostile") as hostile,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(heartbeat.run)
            await nursery.start(run_bridge, bridges[0])
            hostile.publish("trivy/to/one/evil", b"x" * (MAX_PAYLOAD + 1))
            state = {"name": "EVIL", "subscriptions": {"1": slow, "2": "^ok (.*)"}}
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            hostile.publish("trivy/agents/evil/10.0.0.1:1", json.dumps(state), retain=True)
            await wait_for_subscription(alice, "EVIL", "^ok (.*)")
            assert alice.peer("EVIL").subscriptions == {0: "^ok (.*)"}  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
    assert heartbeat.longest < 0.25, heartbeat.longest


async def test_a_broker_restart_is_bridged_again_without_duplicates(mosquitto: Mosquitto) -> None:
    """The broker restarts empty (no persistence): both bridges reconnect,
    publish their agents again, and texts cross again, once; an agent joining
    after the restart appears on the other site."""
    one, two = sites(mosquitto.port, "one", "two", keepalive=2)
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", one.bus) as alice,
            trivy.open_ivy_bus("BOB", two.bus) as bob,
            trio.open_nursery() as nursery,
        ):
            hello = alice.subscribe("^hello (.*)")
            site_one = await nursery.start(run_bridge, one)
            site_two = await nursery.start(run_bridge, two)
            await wait_for_subscription(bob, "ALICE", "^hello (.*)")
            mosquitto.stop()
            mosquitto.start()
            await site_one.wait_bridging(2)
            await site_two.wait_bridging(2)
            # (mosquitto publishes each client's will as it shuts down: the
            # agents may have left and come back; they are back, once)
            await wait_for_subscription(bob, "ALICE", "^hello (.*)")
            await alice.wait_for_peer("BOB")
            assert await bob.send("hello again") == 1
            assert (await hello.receive()).groups == ("again",)
            assert await bob.send("hello last") == 1
            assert (await hello.receive()).groups == ("last",)  # (not "again" twice)
            assert len(bob.peers_named("ALICE")) == 1
            assert len(alice.peers_named("BOB")) == 1
            async with trivy.open_ivy_bus("CAROL", one.bus) as carol:
                carol.subscribe("^carol")
                await wait_for_subscription(bob, "CAROL", "^carol")
            nursery.cancel_scope.cancel()


async def test_a_second_bridge_for_a_site_refuses_at_once(broker: int) -> None:
    """The running bridge answers the newcomer's claim: the newcomer says so,
    well before its claim timeout, and shows nothing."""
    one, again = sites(broker, "one", "one")
    again = attrs.evolve(again, claim_timeout=30)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_bridge, one)
            started = trio.current_time()
            with pytest.raises(BridgeConflict, match="'one' is already bridged"):
                await run_bridge(again)
            assert trio.current_time() - started < 5
            nursery.cancel_scope.cancel()


async def test_a_dead_bridges_site_is_taken_over(broker: int) -> None:
    """The broker still says a site is online (its bridge died unseen): the
    next bridge for it waits its claim timeout, nobody answers, it bridges."""
    one, two = sites(broker, "one", "two")
    one = attrs.evolve(one, claim_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with (
            open_mqtt("127.0.0.1", broker, client_id="dead") as dead,
            trivy.open_ivy_bus("ALICE", one.bus) as alice,
            trivy.open_ivy_bus("BOB", two.bus) as bob,
            trio.open_nursery() as nursery,
        ):
            dead.publish("trivy/site/one", b"online 00000000000000000001-dead", retain=True)
            dead.publish("trivy/agents/one/10.9.9.9:9", b'{"name": "GHOST", "subscriptions": {}}',
                         retain=True)  # fmt: skip
            alice.subscribe("^alice")
            async with bob.events() as events:
                await nursery.start(run_bridge, two)
                await nursery.start(run_bridge, one)
                await wait_for_subscription(bob, "ALICE", "^alice")
                while bob.peer("GHOST") is not None:  # (the new bridge clears its dead agents)
                    await events.receive()
            nursery.cancel_scope.cancel()


async def test_a_second_bridge_on_one_bus_refuses(broker: int) -> None:
    """Two bridges on one bus would publish each other's proxies: the later refuses."""
    one, other = sites(broker, "one", "three")
    other = attrs.evolve(other, bus=one.bus)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_bridge, one)
            with pytest.raises(BridgeConflict, match="another bridge runs on this bus"):
                await run_bridge(other)
            nursery.cancel_scope.cancel()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """A mosquitto that speaks only TLS (a certificate of a CA made here) and
    wants a password; the CA's file."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    passwords = tmp_path / "passwords"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for user in ("one", "two"):  # (each site its own user, named as the site)
        subprocess.run([passwd, "-b", *(["-c"] if user == "one" else []), str(passwords),
                        user, "s3cret"], check=True)  # fmt: skip
    acl = Path(__file__).parent.parent / "docs" / "howto" / "bridge-acl.conf"  # (the docs')
    port = _free_tcp_port()
    broker = Mosquitto(
        tmp_path,
        f"listener {port} 127.0.0.1\ncafile {tmp_path}/ca.pem\ncertfile {tmp_path}/server.pem\n"
        f"keyfile {tmp_path}/server.key\nallow_anonymous false\npassword_file {passwords}\n"
        f"acl_file {acl}\n",
    )
    broker.port = port
    broker.start()
    try:
        yield broker, tmp_path / "ca.pem"
    finally:
        broker.stop()


async def test_tls_and_a_password(tls_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    """Both sites over TLS with a password, each allowed only its own topics by
    the ACL the docs give; a wrong password is one clear error."""
    broker, ca = tls_broker
    tls = {"tls": True, "ca_file": str(ca), "password": "s3cret"}
    one, two = (  # (each site its own user, named as the site)
        attrs.evolve(options, username=options.site)
        for options in sites(broker.port, "one", "two", **tls)
    )
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("ALICE", one.bus) as alice,
            trivy.open_ivy_bus("BOB", two.bus) as bob,
            trio.open_nursery() as nursery,
        ):
            hello = alice.subscribe("^hello (.*)")
            await nursery.start(run_bridge, one)
            # the command, with the password in a file
            secret = tmp_path / "secret"
            secret.write_text("s3cret\n")
            command = [
                sys.executable, "-m", "trivy", "bridge", "-b", str(two.bus), "--site", "two",
                "--broker", f"mqtts://two@127.0.0.1:{broker.port}", "--ca-file", str(ca),
                "--password-file", str(secret),
            ]  # fmt: skip
            process = await trio.lowlevel.open_process(command)
            try:
                await wait_for_subscription(bob, "ALICE", "^hello (.*)")
                assert await bob.send("hello privately") == 1
                assert (await hello.receive()).groups == ("privately",)
            finally:
                process.kill()
            with pytest.raises(MqttError, match="refused"):
                await run_bridge(attrs.evolve(two, password="wrong"))
            with pytest.raises(MqttError, match="cannot reach"):  # (a CA that did not sign it)
                await run_bridge(attrs.evolve(two, ca_file=None))
            nursery.cancel_scope.cancel()


async def test_a_frozen_broker_slows_the_sender_and_loses_nothing(mosquitto: Mosquitto) -> None:
    """The broker stops reading: the bridge stops taking texts from its proxy,
    the sender's buffer for the proxy fills and ``send_nowait`` reports it
    (no memory grows without bound); thawed, every text queued arrives, once
    and in order."""
    one, two = sites(mosquitto.port, "one", "two", keepalive=600)
    filler = "x" * 1000
    with trio.fail_after(60):
        async with (
            trivy.open_ivy_bus("ALICE", one.bus) as alice,
            trivy.open_ivy_bus("BOB", two.bus) as bob,
            trio.open_nursery() as nursery,
        ):
            big = alice.subscribe(r"^big (\d+) (.*)", max_buffer=100_000)  # (1 KB MSGs)
            await nursery.start(run_bridge, one)
            await nursery.start(run_bridge, two)
            await wait_for_subscription(bob, "ALICE", r"^big (\d+) (.*)")
            mosquitto.pause()
            try:
                queued = 0
                while bob.send_nowait(f"big {queued} {filler}") == 1:
                    queued += 1
                    assert queued < 200_000, "the sender never felt the frozen broker"
                    await trio.lowlevel.checkpoint()
            finally:
                mosquitto.pause(False)
            for i in range(queued):
                assert (await big.receive()).groups == (str(i), filler)
            assert await bob.send(f"big {queued} last") == 1
            assert (await big.receive()).groups == (str(queued), "last")  # (nothing twice)
            print(f"the sender felt the frozen broker after {queued} texts of 1 KB")
            nursery.cancel_scope.cancel()


async def test_the_command_refused_for_a_site_bridged_already_says_so_in_one_line(
    broker: int,
) -> None:
    """It said "unexpected error, a bug: BridgeConflict: ...": the refusal
    came wrapped in an exception group."""
    (one,) = sites(broker, "one")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_bridge, one)
            done = await trio.run_process(
                [sys.executable, "-m", "trivy", "bridge", "-b", f"127:{free_udp_port()}",
                 "--broker", f"mqtt://127.0.0.1:{broker}", "--site", "one"],
                capture_stderr=True, check=False,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "is already bridged" in lines[0] and "bug" not in lines[0], lines

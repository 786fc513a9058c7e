"""Two sites joined through a real MQTT broker (mosquitto, started here).

Each site is a bus of its own (its own UDP port, as two LANs would be),
with its own bridge; every agent sees the other site's agents as agents
of the bus, with their names and regexps.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trivy
from trivy.bridge import BridgeOptions, MqttError, run_bridge
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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A mosquitto broker on loopback, once it says it runs; its port."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_tcp_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n"
    )
    process = subprocess.Popen(
        [mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None  # (its log: stderr, which it does not buffer)
    for line in process.stderr:  # the listener is open once it says "running"
        if "running" in line:
            break
    else:
        raise AssertionError(f"mosquitto did not start (exit {process.wait()})")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # (keeps the pipe read)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(5)


def sites(broker: int, *names: str, allow_die: bool = False) -> list[BridgeOptions]:
    """Buses (one UDP port each, as separate LANs) and their bridges' options."""
    return [
        BridgeOptions(
            bus=f"127:{free_udp_port()}", broker_port=broker, site=name, allow_die=allow_die
        )
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
            try:
                await wait_for_subscription(bob, "ALICE", "^hello (.*)")
                assert await bob.send("hello command") == 1
                assert (await hello.receive()).groups == ("command",)
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
            finally:
                process.kill()
            assert process.stderr is not None
            said = (await process.stderr.receive_some(4096)).decode()
            assert said.startswith("trivy: bridging site 'two' through 127.0.0.1:"), said
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
            hostile.publish("trivy/to/one", b"x" * (MAX_PAYLOAD + 1))
            state = {"name": "EVIL", "subscriptions": {"1": slow, "2": "^ok (.*)"}}
            hostile.publish("trivy/agents/evil/10.0.0.1:1", json.dumps(state), retain=True)
            await wait_for_subscription(alice, "EVIL", "^ok (.*)")
            assert alice.peer("EVIL").subscriptions == {0: "^ok (.*)"}  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
    assert heartbeat.longest < 0.25, heartbeat.longest

"""What a broker user can make a bridge spend is bounded: its event loop,
its log and its memory (a real mosquitto, started by test_bridge's fixtures)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import trivy
from trivy.bridge import run_bridge
from trivy.bridge._json import MAX_JSON_TOKENS, loads
from trivy.bridge._limits import LOG_BURST, LOG_CUT
from trivy.bridge._mqtt import RECEIVED_BYTES, MqttClient, open_mqtt
from trivy.bridge._remote import MAX_AGENT_REGEXPS
from trivy.bridge._site import MAX_KEPT
from trivy.testing import wait_for_subscription

from .heartbeat import Heartbeat
from .test_bridge import TIMEOUT, broker, mosquitto, sites  # noqa: F401 (fixtures)


@asynccontextmanager
async def _attacked(
    bridge: Any, port: int
) -> AsyncIterator[tuple[trivy.IvyBus, MqttClient, Any, trio.Nursery]]:
    """ALICE on the site's bus, its bridge running, and a hostile client of the broker."""
    async with (
        trivy.open_ivy_bus("ALICE", bridge.bus) as alice,
        open_mqtt("127.0.0.1", port, client_id="hostile") as hostile,
        trio.open_nursery() as nursery,
    ):
        yield alice, hostile, await nursery.start(run_bridge, bridge), nursery


def _agent(
    hostile: MqttClient, site: str, key: str, regexps: list[str], name: str = "EVIL"
) -> None:
    state = {"name": name, "subscriptions": {str(i): r for i, r in enumerate(regexps)}}
    hostile.publish(f"trivy/agents/{site}/{key}", json.dumps(state), retain=True)


async def _subscribed(behind: MqttClient, sender: MqttClient) -> MqttClient:
    """``behind`` subscribed to ``t/#``, once ``sender``'s messages reach it;
    its iterator (``t/first`` messages may still come)."""
    behind.subscribe("t/#")
    received = behind.__aiter__()
    while True:  # (until the subscription is in place)
        sender.publish("t/first", b"")
        with trio.move_on_after(0.2):
            assert (await received.__anext__()).topic == "t/first"
            return received


async def _topics(received: MqttClient, count: int) -> list[str]:
    """The topics of the next ``count`` messages but ``t/first``."""
    topics = []
    async for message in received:
        if message.topic != "t/first":
            topics.append(message.topic)
        if len(topics) == count:
            break
    return topics


def _directs(hostile: MqttClient, to: trivy.IvyBus, count: int, text: str) -> None:
    """``count`` direct messages from the agent 10.0.0.1:1 of site evil to ``to``."""
    for number in range(count):
        item = {"kind": "direct", "num_id": number, "text": f"{text}{number}"}
        item.update({"to": f"127.0.0.1:{to.port}", "from": "10.0.0.1:1"})
        hostile.publish("trivy/to/one/evil", json.dumps(item))


def _most_logged(started: float) -> int:
    """Records of one kind the limiter lets through since ``started``."""
    return LOG_BURST + int(trio.current_time() - started) + 1


async def test_a_remote_agents_regexps_are_capped_and_bound_fairly(broker: int) -> None:  # noqa: F811
    """15,000 regexps in one message: 10,000 are proxied, yielding as it goes;
    the rest are refused and counted."""
    bridges = sites(broker, "one")
    heartbeat = Heartbeat()
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            nursery.start_soon(heartbeat.run)
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", [f"^x{i} (.*)" for i in range(15_000)])
            last = f"^x{MAX_AGENT_REGEXPS - 1} (.*)"
            await wait_for_subscription(alice, "EVIL", last)
            assert site.remote.refused_regexps == 15_000 - MAX_AGENT_REGEXPS
            assert site.remote.bound == MAX_AGENT_REGEXPS
            nursery.cancel_scope.cancel()
    assert heartbeat.longest < 0.5, heartbeat.longest  # (it was 1.5 s, binding in one go)


async def test_a_newer_agents_message_supersedes_one_being_applied(broker: int) -> None:  # noqa: F811
    """Regexps being bound are given up for a newer message's, not bound in full."""
    bridges = sites(broker, "one")
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^start$"])
            await wait_for_subscription(alice, "EVIL", "^start$")
            _agent(hostile, "evil", "10.0.0.1:1", [f"^x{i} (.*)" for i in range(MAX_AGENT_REGEXPS)])
            _agent(hostile, "evil", "10.0.0.1:1", ["^final$"])
            peer = await wait_for_subscription(alice, "EVIL", "^final$")
            async with alice.events() as events:  # (the unbinding may still be on its way)
                while len(peer.subscriptions) > 1:
                    await events.receive()
            assert list(peer.subscriptions.values()) == ["^final$"]
            assert site.remote.bound < 1 + MAX_AGENT_REGEXPS + 1  # (given up part way)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("bad", ["messages", "regexps"])
async def test_a_flood_of_bad_input_logs_a_bounded_few_short_lines(
    broker: int,  # noqa: F811
    bad: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """500 malformed messages, or 500 regexps that do not compile: at most
    the limiter's burst and one a second are logged, each line cut short."""
    bridges = sites(broker, "one")
    long = "x" * 1024
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            caplog.set_level(logging.INFO, "trivy.bridge")
            started = trio.current_time()
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            if bad == "messages":
                for _ in range(500):
                    hostile.publish(f"trivy/to/one/{long}", b"{")
                # (one client's messages come in order: once this is in, so is the flood)
                _agent(hostile, "evil", "10.0.0.1:1", ["^sync$"], name="SYNC")
                await wait_for_subscription(alice, "SYNC", "^sync$")
            else:  # (a proxy binds its regexps in order: once the last is in, all were tried)
                bad_ones = [f"^{long}{i}(" for i in range(500)]
                _agent(hostile, "evil", "10.0.0.2:2", [*bad_ones, "^sync$"])
                await wait_for_subscription(alice, "EVIL", "^sync$")
            kind = "bad message" if bad == "messages" else "bad regexp"
            assert site.log.asked[kind] == 500
            logged = [r.getMessage() for r in caplog.records if r.name == "trivy.bridge"]
            assert LOG_BURST <= len(logged) <= _most_logged(started), len(logged)
            assert max(map(len, logged)) < 3 * LOG_CUT + 100
            nursery.cancel_scope.cancel()


async def test_fake_sites_and_agents_are_remembered_up_to_their_caps(
    broker: int,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """50 sites with 4 KiB names and 50 agents with 1 KiB keys: the caps
    are held, what is over is counted, and a bounded few lines logged."""
    bridges = sites(broker, "one", max_sites=4, max_remote_agents=2)
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            caplog.set_level(logging.INFO, "trivy.bridge")
            started = trio.current_time()
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^v0$"])
            await wait_for_subscription(alice, "EVIL", "^v0$")
            for i in range(50):
                hostile.publish(f"trivy/site/{i:04d}{'s' * 4096}", b"online 1", retain=True)
            for i in range(50):
                _agent(hostile, "evil", f"10.0.1.{i}:{i}{'k' * 1024}", ["^never$"])
            _agent(hostile, "evil", "10.0.0.1:1", ["^v1$"])  # (in once the rest is)
            await wait_for_subscription(alice, "EVIL", "^v1$")
            assert site.sites_refused == 50 - 3  # (evil and 3 more)
            assert len(site._sites) == 4
            assert site.remote.not_shown == 50 - 1
            assert len(site._seen) <= 2
            logged = [r.getMessage() for r in caplog.records if r.name == "trivy.bridge"]
            assert len(logged) <= 2 * _most_logged(started), len(logged)
            assert max(map(len, logged)) < 3 * LOG_CUT + 100
            for i in range(50):  # (mosquitto forgets when the test ends: tidy anyway)
                hostile.publish(f"trivy/site/{i:04d}{'s' * 4096}", b"", retain=True)
            nursery.cancel_scope.cancel()


async def test_a_message_too_costly_to_parse_is_refused_unparsed(broker: int) -> None:  # noqa: F811
    """4 MiB of 200,000 empty lists nested 20 deep held the loop 0.9 s in
    ``json.loads``: refused, counted; an agent of 10,000 regexps, each with
    ``,:[{`` in it (over the cap, counted whole), still passes."""
    bridges = sites(broker, "one")
    nested = ",".join(["[" * 20 + "]" * 20] * ((4 * 1024 * 1024 - 200) // 41))
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            hostile.publish("trivy/to/one/evil", f'{{"text": "x", "junk": [{nested}]}}')
            regexps = [f"^x{i}, \\[{{: (.*)$" for i in range(MAX_AGENT_REGEXPS)]
            _agent(hostile, "evil", "10.0.0.1:1", regexps)
            await wait_for_subscription(alice, "EVIL", regexps[-1])  # (in after the other)
            assert site.costly_refused == 1
            assert site.log.asked["costly"] == 1
            assert site.remote.refused_regexps == 0
            nursery.cancel_scope.cancel()


def test_a_text_of_1_mib_dense_in_tokens_still_parses() -> None:
    """A direct message of 1 MiB of ``,:[{"\\``: its tokens are in its string."""
    item = {"kind": "direct", "num_id": 2**63 - 1, "text": ',:[{"\\' * (1024 * 1024 // 6)}
    payload = json.dumps(item).encode()
    assert payload.count(b",") > MAX_JSON_TOKENS
    assert loads(payload) == item


async def test_one_hostile_message_never_takes_the_bridge_down(broker: int) -> None:  # noqa: F811
    """Each of these made the bridge exit ("unexpected error, a bug"), and,
    retained, at every start: an agent named "" or with a newline (the
    proxy's bus refused the name), JSON nested 1,100 deep (RecursionError),
    an id of Infinity (OverflowError). Now each is a bad message, logged."""
    bridges = sites(broker, "one")
    nested = "[" * 1100 + "]" * 1100
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^a (.*)"], name="")
            _agent(hostile, "evil", "10.0.0.1:2", ["^b (.*)"], name="EVIL\nX")
            hostile.publish("trivy/agents/evil/10.0.0.1:3", nested, retain=True)
            item = '{"kind": "direct", "num_id": Infinity, "text": "x", "from_site": "evil"}'
            hostile.publish("trivy/to/one/evil", item)
            _agent(hostile, "evil", "10.0.0.1:4", ["^good (.*)"], name="GOOD")
            await wait_for_subscription(alice, "GOOD", "^good (.*)")  # (after them all)
            assert site.log.asked["bad message"] == 4
            assert alice.peer("EVIL") is None and alice.peer("") is None
            nursery.cancel_scope.cancel()


async def test_what_the_bridge_has_not_taken_is_bounded_in_bytes(broker: int) -> None:  # noqa: F811
    """Received messages were held by count (1,000) alone: 400 of 4 MiB for
    a bridge that was behind held 1.65 GB. Reading stops once RECEIVED_BYTES
    are held, and goes on as the bridge takes them: nothing is lost."""
    payload = b"x" * (4 * 1024 * 1024 - 64)
    with trio.fail_after(TIMEOUT * 3):
        async with (
            open_mqtt("127.0.0.1", broker, client_id="behind") as behind,
            open_mqtt("127.0.0.1", broker, client_id="sender") as sender,
        ):
            received = await _subscribed(behind, sender)
            for i in range(40):  # (160 MiB)
                sender.publish(f"t/{i}", payload)
            while behind.held < RECEIVED_BYTES:  # noqa: ASYNC110 (a count, no event)
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # (time to read more, were it not stopped)
            assert behind.held < RECEIVED_BYTES + 16 * 1024 * 1024, behind.held
            assert await _topics(received, 40) == [f"t/{i}" for i in range(40)]


async def test_a_sites_status_and_our_retained_keys_are_kept_short(broker: int) -> None:  # noqa: F811
    """A site's status was kept whole as its instance: 64 sites saying
    "online" and 4 MiB held 330 MB. Our site's retained keys of 60 KB
    were remembered, 10,000 of them."""
    bridges = sites(broker, "one")
    big = b"online " + b"x" * (4 * 1024 * 1024 - 64)
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            for i in range(8):
                hostile.publish(f"trivy/site/big{i}", big, retain=True)
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^v0$"])
            await wait_for_subscription(alice, "EVIL", "^v0$")  # (after the big ones)
            assert len(site._sites) == 9
            assert max(map(len, site._sites.values())) <= MAX_KEPT + 16
            for i in range(8):  # (mosquitto forgets when the test ends: tidy anyway)
                hostile.publish(f"trivy/site/big{i}", b"", retain=True)
            nursery.cancel_scope.cancel()
    before = set(site._stale)
    site._stale_said("k" * (MAX_KEPT + 1))  # (a key of ours, retained: too long to keep)
    assert site._stale == before


@asynccontextmanager
async def _probe_to_freeze(bus: str, site: Any) -> AsyncIterator[trio.Process]:
    """A probe named FROZEN on ``bus``, known to the bridge's observer; the
    test freezes it (SIGSTOP); it is thawed and killed on the way out."""
    probe = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trivy", "probe", "-b", bus, "-n", "FROZEN", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        await site._observer.wait_for_peer("FROZEN")
        yield probe
    finally:
        probe.send_signal(signal.SIGCONT)
        probe.kill()
        await probe.wait()


async def test_a_frozen_local_agent_delays_the_remote_agents_once(broker: int) -> None:  # noqa: F811
    """Each new proxy waits (2 s at most) for the local agents to connect to
    it, and the bridge reads nothing meanwhile: with one local agent frozen
    (SIGSTOP), 20 remote agents took 38 s to come. A local agent that did
    not meet a proxy in time is not waited for by the next ones."""
    bridges = sites(broker, "one")
    bus = bridges[0].bus
    with trio.fail_after(TIMEOUT * 2):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            async with _probe_to_freeze(bus, site) as frozen:
                frozen.send_signal(signal.SIGSTOP)
                hostile.publish("trivy/site/evil", b"online 1", retain=True)
                started = trio.current_time()
                for i in range(5):
                    _agent(hostile, "evil", f"10.0.0.1:{i}", [f"^v{i}$"], name=f"EVIL{i}")
                for i in range(5):
                    await wait_for_subscription(alice, f"EVIL{i}", f"^v{i}$")
                took = trio.current_time() - started
            assert took < 5.0, took  # (2 s for the first, not 2 s each: 10 s before)
            nursery.cancel_scope.cancel()


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_the_proxies_of_remote_agents_do_not_connect_among_themselves(broker: int) -> None:  # noqa: F811
    """40 remote agents: each proxy is connected to the local agent alone, and
    the bridge's descriptors grow with their number, not its square (each
    proxy connected to every other one: 1,560 more descriptors)."""
    count = 40
    bridges = sites(broker, "one")
    with trio.fail_after(TIMEOUT):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            before = _descriptors()
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            async with alice.events() as events:
                for i in range(count):
                    _agent(hostile, "evil", f"10.0.0.1:{i + 1}", [f"^to{i} (.*)"], name=f"R{i}")
                while sum(p.name.startswith("R") for p in alice.peers) < count:
                    await events.receive()
            proxies = [proxy.bus for proxy in site.remote._proxies.values()]
            assert len(proxies) == count
            for bus in proxies:
                assert bus is not None and [p.name for p in bus.peers] == ["ALICE"]
            # each proxy: its listener, its UDP socket, and both ends of its
            # connection with ALICE (in this process too)
            assert _descriptors() - before <= 5 * count
            nursery.cancel_scope.cancel()


async def test_a_local_agent_named_as_a_joining_proxy_is_still_forwarded(broker: int) -> None:  # noqa: F811
    """While a proxy named TWIN waited for the local agents (2 s at most),
    every local agent named TWIN was taken for a proxy: the texts it sent
    to another site's agents were not forwarded."""
    bridges = sites(broker, "one")
    bus = bridges[0].bus
    with trio.fail_after(TIMEOUT * 2):
        async with (
            _attacked(bridges[0], broker) as (_alice, hostile, site, nursery),
            trivy.open_ivy_bus("TWIN", bus) as twin,
        ):
            hostile.subscribe("trivy/to/evil/#")
            async with _probe_to_freeze(bus, site) as frozen:
                hostile.publish("trivy/site/evil", b"online 1", retain=True)
                _agent(hostile, "evil", "10.0.0.1:1", ["^hi (.*)"], name="SUB")
                await wait_for_subscription(twin, "SUB", "^hi (.*)")
                frozen.send_signal(signal.SIGSTOP)  # (the next proxy waits for it)
                _agent(hostile, "evil", "10.0.0.1:2", ["^never$"], name="TWIN")
                await twin.wait_for_peer("TWIN")  # (the proxy, waiting for FROZEN)
                assert "TWIN" in site.remote._starting
                assert await twin.send("hi while it joins") == 1
                async for message in hostile:
                    if message.topic.startswith("trivy/to/evil/"):
                        item = json.loads(message.payload)
                        assert item["groups"] == ["while it joins"]
                        break
            nursery.cancel_scope.cancel()

"""A bridge behind on its work still serves: its proxies bind regexps in
turns, its reading never waits for a proxy to join, and its broker
connection stays alive while it is behind (a real mosquitto)."""

from __future__ import annotations

import gc
import itertools
import json
import signal
import sys

import pytest
import trio

import trivy
from trivy.bridge._agent_state import crowding, within_caps
from trivy.bridge._json import loads
from trivy.bridge._mqtt import MESSAGE_OVERHEAD, _cost, open_mqtt
from trivy.testing import wait_for_subscription

from .heartbeat import Heartbeat, LongestStep
from .test_bridge import TIMEOUT, broker, mosquitto, sites  # noqa: F401 (fixtures)
from .test_bridge_bounds import _agent, _attacked, _directs, _probe_to_freeze, _subscribed, _topics


async def test_a_bridge_behind_its_broker_stays_connected_and_loses_nothing(
    broker: int,  # noqa: F811
) -> None:
    """A bridge that took nothing for 4 s, with 3,000 messages for it (its
    channel holds 1,000): the driver waited for room, reading nothing and
    sending no keepalive (the broker dropped a bridge behind for 34 s). It
    goes on reading within its bound in bytes, and keeps the connection."""
    with trio.fail_after(TIMEOUT * 2):
        async with (
            open_mqtt("127.0.0.1", broker, client_id="behind", keepalive=1) as behind,
            open_mqtt("127.0.0.1", broker, client_id="sender") as sender,
        ):
            received = await _subscribed(behind, sender)
            for i in range(3000):
                sender.publish(f"t/{i}", b"x")
            await trio.sleep(4.0)  # (the bridge, stuck: 4 keepalives)
            assert behind.held >= 3000 * MESSAGE_OVERHEAD  # (all read: 1,001 bytes before)
            assert not behind.lost
            assert await _topics(received, 3000) == [f"t/{i}" for i in range(3000)]
            assert not behind.lost


async def test_proxies_binding_at_once_take_turns(broker: int) -> None:  # noqa: F811
    """40 remote agents, each republished with 1,000 regexps at once: each
    proxy bound for 2 ms a pass of the scheduler, so passes took 44-48 ms
    here (256 agents of 10,000: 0.3 to 3.1 s, and the broker dropped the
    bridge). They take turns: one binds, for 2 ms, a pass."""
    count, regexps = 40, 1000
    bridges = sites(broker, "one")
    heartbeat = Heartbeat()
    with trio.fail_after(TIMEOUT * 3):
        async with _attacked(bridges[0], broker) as (alice, hostile, _site, nursery):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            for i in range(count):
                _agent(hostile, "evil", f"10.0.0.1:{i + 1}", [f"^r{i}_0 "], name=f"R{i}")
            for i in range(count):
                await wait_for_subscription(alice, f"R{i}", f"^r{i}_0 ")
            nursery.start_soon(heartbeat.run)
            # (a full collection of this process's objects, tens of thousands
            # of regexps on both ends, takes 30-60 ms whatever the scheduling:
            # not what is measured here)
            gc.disable()
            try:
                for i in range(count):
                    many = [f"^r{i}_{j} " for j in range(regexps)]
                    _agent(hostile, "evil", f"10.0.0.1:{i + 1}", many, name=f"R{i}")
                for i in range(count):
                    await wait_for_subscription(alice, f"R{i}", f"^r{i}_{regexps - 1} ")
            finally:
                gc.enable()
            # (ALICE, in this process too, compiles the regexps the proxies
            # send it: its own slice, and the proxies' one, a pass)
            assert heartbeat.longest < 0.03, heartbeat.longest  # (44-48 ms before)
            nursery.cancel_scope.cancel()


async def test_the_bridge_reads_on_while_new_proxies_join(broker: int) -> None:  # noqa: F811
    """10 new remote agents of 2,000 regexps, then a direct message from one
    shown before: the bridge waited for each new proxy to bind its regexps
    and meet the local agents before reading the next message (30 agents of
    10,000: 40 s). Now the message arrives before they are all bound."""
    bridges = sites(broker, "one")
    with trio.fail_after(TIMEOUT * 3):
        async with (
            _attacked(bridges[0], broker) as (alice, hostile, site, nursery),
            alice.direct_messages() as directs,
        ):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^first$"], name="FIRST")
            await wait_for_subscription(alice, "FIRST", "^first$")
            for i in range(10):
                many = [f"^n{i}_{j} " for j in range(2000)]
                _agent(hostile, "evil", f"10.0.0.2:{i + 1}", many, name=f"NEW{i}")
            item = {"kind": "direct", "num_id": 7, "text": "on time"}
            item.update({"to": f"127.0.0.1:{alice.port}", "from": "10.0.0.1:1"})
            hostile.publish("trivy/to/one/evil", json.dumps(item))
            message = await directs.receive()
            assert (message.peer.name, message.num_id, message.text) == ("FIRST", 7, "on time")
            assert site.remote.bound < 1 + 10 * 2000
            nursery.cancel_scope.cancel()


async def test_what_a_joining_agent_says_waits_for_its_proxy(broker: int) -> None:  # noqa: F811
    """An agent shown, then at once 8,000 direct messages of it to a local
    agent, while a frozen local agent holds its proxy's joining (2 s): they
    wait for the proxy, and are delivered in order, a slice at a time (in
    one step, they held the loop for all of them)."""
    bridges = sites(broker, "one")
    count = 8000
    longest = _LongestStepBut("MqttClient.drive")  # (the test's own publisher writes 8,000)
    with trio.fail_after(TIMEOUT * 2):
        async with (
            _attacked(bridges[0], broker) as (alice, hostile, site, nursery),
            alice.direct_messages(max_buffer=2 * count) as directs,
            _probe_to_freeze(bridges[0].bus, site) as frozen,
        ):
            frozen.send_signal(signal.SIGSTOP)
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^joining$"], name="JOINING")
            _directs(hostile, alice, count, "hello ")
            gc.disable()  # (see test_proxies_binding_at_once_take_turns)
            trio.lowlevel.add_instrument(longest)
            try:
                await trio.lowlevel.checkpoint()
                for number in range(count):
                    message = await directs.receive()
                    assert (message.peer.name, message.text) == ("JOINING", f"hello {number}")
                await trio.lowlevel.checkpoint()
            finally:
                trio.lowlevel.remove_instrument(longest)
                gc.enable()
            assert site.remote._waiting_bytes == 0
            assert longest.longest < 0.015, longest.longest  # (27 ms in one step before)
            nursery.cancel_scope.cancel()


class _LongestStepBut(LongestStep):
    """The longest step of any task but those whose name ends with ``excluded``."""

    def __init__(self, excluded: str) -> None:
        super().__init__()
        self._excluded = excluded

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not task.name.endswith(self._excluded):
            super().after_task_step(task)


def test_ids_too_long_to_be_ids_are_refused_before_int() -> None:
    """Ids are JSON keys, which JSON's bound on integers never sees: 950 ids
    of 4,200 digits took 63 ms of ``int()`` in one step."""
    assert within_caps({"12": "^a$"}) == ({12: "^a$"}, 0)
    with pytest.raises(ValueError, match="an id of 4200 characters"):
        within_caps({"1" * 4200: "^a$"})


def test_numbers_with_a_fraction_are_refused_at_the_first() -> None:
    """No bridge message holds a float, the costliest token to parse (40,000
    took 22 to 28 ms)."""
    with pytest.raises(ValueError, match="fraction"):
        loads(json.dumps([1.5] * 40_000).encode())
    assert loads(b'{"num_id": 3}') == {"num_id": 3}


def test_a_site_showing_the_most_gives_its_newest_place_to_another() -> None:
    shown = [("evil", f"e{i}") for i in range(5)] + [("good", "g0")]
    assert crowding(shown, "good") == ("evil", "e4")  # (5 against 1)
    assert crowding(shown, "evil") is None  # (its own newcomer: not shown)
    level = [("evil", "e0"), ("evil", "e1"), ("good", "g0")]
    assert crowding(level, "good") is None  # (one apart: not pushed below)
    assert crowding([], "good") is None


async def test_one_site_cannot_keep_another_sites_agents_out(broker: int) -> None:  # noqa: F811
    """With ``max_remote_agents`` shown by one broker user's site, another
    site's new agents were never shown (a global count, first come)."""
    bridges = sites(broker, "one", max_remote_agents=6)
    with trio.fail_after(TIMEOUT * 2):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            for other in ("evil", "good"):
                hostile.publish(f"trivy/site/{other}", b"online 1", retain=True)
            for i in range(6):
                _agent(hostile, "evil", f"10.0.0.1:{i + 1}", [f"^e{i}$"], name=f"E{i}")
            await wait_for_subscription(alice, "E5", "^e5$")
            _agent(hostile, "evil", "10.0.0.1:99", ["^e99$"], name="E99")  # (not shown)
            for i in range(3):
                _agent(hostile, "good", f"10.0.0.2:{i + 1}", [f"^g{i}$"], name=f"G{i}")
            for i in range(3):
                await wait_for_subscription(alice, f"G{i}", f"^g{i}$")
            shown = sorted(key for _, key in site.remote.shown())
            assert len(shown) == 6
            assert sum(key.startswith("10.0.0.2:") for key in shown) == 3
            assert "10.0.0.1:99" not in shown
            assert site.remote.not_shown >= 4  # (E99, and the 3 E that gave way)
            nursery.cancel_scope.cancel()


async def test_answers_to_what_waited_for_a_proxy_reach_their_site(broker: int) -> None:  # noqa: F811
    """ALICE answers each of 8,000 direct messages that waited for a proxy (held by a
    frozen local agent): every answer reaches the remote site. Delivered
    before the proxy's stream of direct messages was open, about 6,000 of
    them were lost, without a word."""
    bridges = sites(broker, "one")
    count = 8000
    with trio.fail_after(TIMEOUT * 3):
        async with (
            _attacked(bridges[0], broker) as (alice, hostile, site, nursery),
            _probe_to_freeze(bridges[0].bus, site) as frozen,
        ):

            async def answer(directs: trivy.EventStream[trivy.DirectMessage]) -> None:
                async for request in directs:  # (a stream that drops none of them)
                    alice.send_direct(request.peer, request.num_id, f"re {request.text}")

            nursery.start_soon(answer, alice.direct_messages(max_buffer=2 * count))
            hostile.subscribe("trivy/to/evil/#")
            frozen.send_signal(signal.SIGSTOP)
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            _agent(hostile, "evil", "10.0.0.1:1", ["^asking$"], name="ASKING")
            _directs(hostile, alice, count, "q")
            answers = []
            async for message in hostile:
                if message.topic.startswith("trivy/to/evil/"):
                    answers.append(json.loads(message.payload)["text"])
                    if len(answers) == count:
                        break
            assert answers == [f"re q{number}" for number in range(count)]
            nursery.cancel_scope.cancel()


async def test_an_agent_republished_without_pause_still_joins(broker: int) -> None:  # noqa: F811
    """A remote agent republished every 50 ms with another 2,000 regexps: its
    proxy started over from each newer state, and never joined (and a local
    agent of its name was taken for a proxy meanwhile, its changes never
    published). It joins with the state it was shown with, then follows."""
    bridges = sites(broker, "one")
    states = [[f"^{side}{j} " for j in range(2000)] for side in "ab"]

    async def republish() -> None:
        for turn in itertools.count():
            _agent(hostile, "evil", "10.0.0.1:1", states[turn % 2], name="BUSY")
            await trio.sleep(0.05)  # (the attack: a state every 50 ms)

    with trio.fail_after(TIMEOUT * 3):
        async with _attacked(bridges[0], broker) as (alice, hostile, site, nursery):
            hostile.publish("trivy/site/evil", b"online 1", retain=True)
            async with trio.open_nursery() as attack:
                attack.start_soon(republish)
                await alice.wait_for_peer("BUSY")  # (its bus is open: not joined yet)
                await site.remote._proxies[("evil", "10.0.0.1:1")].up.wait()  # (never, before)
                assert "BUSY" not in site.remote._starting
                attack.cancel_scope.cancel()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("topic", ["t/" + "x" * 60_000, "t/" + "\U0001f600" * 15_000])
def test_a_received_messages_topic_counts_in_what_is_held(topic: str) -> None:
    """Its payload alone was counted: 20,000 messages with empty payloads and
    60 KB topics held 1.8 GB, counted 9.8 MB of the 64 MiB bound."""
    for payload in (b"", b"x" * 1000):
        assert _cost(topic, payload) >= sys.getsizeof(topic) + sys.getsizeof(payload)

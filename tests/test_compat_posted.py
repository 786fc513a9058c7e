"""Sends from the program's threads: counted there, posted to the bus thread.

A send from a thread of the program (its main thread, a callback's) used to
wait for the bus thread through ``trio.from_thread.run_sync``: 7,000 sends
a second where ivy-python's ``IvySendMsg`` makes 150,000 to 300,000. Now its
count is taken in the caller's thread and the text is posted, in order with
every other call, within a bound. Against a real ivy-python 4.0 agent in
its own process, over loopback.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from trivy.compat import _callback_thread as callback_thread
from trivy.compat import _posted
from trivy.compat.ivy import IvyApplicationDisconnected, IvyIllegalStateError, IvyServer

from .test_compat import (
    PEER_NAME,
    TIMEOUT,
    PythonPeer,
    Recorder,
    connected,
    make_server,
    subscribed,
)

NUMBERED = r"^n (\d+)"


@pytest.fixture
def pair(port: int) -> Iterator[tuple[IvyServer, PythonPeer, Recorder]]:
    """A started compat server and an ivy-python peer subscribed to ``NUMBERED``."""
    rec = Recorder()
    server = make_server(rec)
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", NUMBERED)
    try:
        peer.expect("connected", name=server.agent_name)
        connected(rec)
        subscribed(rec, NUMBERED)
        yield server, peer, rec
    finally:
        peer.close()
        if server.isAlive():
            server.stop()


def _numbers(events: list[dict[str, Any]]) -> list[int]:
    return [int(event["groups"][0]) for event in events if event["event"] == "msg"]


def test_sends_from_the_program_thread_arrive_in_order_before_a_later_call(
    pair: tuple[IvyServer, PythonPeer, Recorder],
) -> None:
    server, peer, rec = pair
    client = connected(rec)
    counts = [server.send_msg(f"n {i}") for i in range(3000)]
    assert counts == [1] * 3000
    assert server.send_msg("nobody wants this") == 0
    client.send_direct_message(7, "after them")  # (waits for the bus thread)
    events = peer.events(3001, ("msg", "direct"))
    assert _numbers(events) == list(range(3000))
    assert events[-1]["event"] == "direct" and events[-1]["text"] == "after them"


def test_the_counts_follow_the_subscriptions_and_the_others_are_exact(
    pair: tuple[IvyServer, PythonPeer, Recorder],
) -> None:
    server, peer, rec = pair
    peer.command("bind", regexp=r"^n (1\d*)")
    subscribed(rec, r"^n (1\d*)")
    assert server.send_msg("n 12") == 2  # counted in this thread
    assert server.send_msg("n 2") == 1
    long_text = "n 1" + "0" * 2000  # counted by the bus thread: the same
    assert server.send_msg(long_text) == 2
    groups = sorted(tuple(peer.expect("msg")["groups"]) for _ in range(5))
    assert groups == sorted([("12",), ("12",), ("2",), (long_text[2:],), (long_text[2:],)])
    # a peer that leaves is no longer counted once its departure is seen
    peer.close()
    rec.wait_for(lambda i: i[0] == "app" and i[2] == IvyApplicationDisconnected)
    assert server.send_msg("n 12") == 0


def test_a_program_thread_waits_while_the_posted_sends_hold_their_bound(
    pair: tuple[IvyServer, PythonPeer, Recorder],
) -> None:
    server, peer, _ = pair
    bridge = server._trivy_bridge
    assert server.send_msg("n 1000000") == 1  # (the bus thread's send prices the regexps)
    release, held = threading.Event(), threading.Event()

    def hold_the_bus_thread(bus: object) -> None:
        held.set()
        release.wait(TIMEOUT)

    holder = threading.Thread(target=bridge.call, args=(hold_the_bus_thread,), daemon=True)
    holder.start()
    assert held.wait(TIMEOUT)
    filler = "x" * 990
    sent: list[int] = []

    def produce() -> None:
        sent.extend(server.send_msg(f"n {i} {filler}") for i in range(2000))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    item = 4 * len(f"n 1999 {filler}") + _posted.POSTED_OVERHEAD
    deadline = time.monotonic() + TIMEOUT
    while bridge._posted.waiting_bytes < _posted.MAX_POSTED_BYTES:
        assert time.monotonic() < deadline, "the posted sends never reached their bound"
        producer.join(0.005)  # (waits for the producer to fill it)
    producer.join(0.2)
    assert producer.is_alive()  # waiting for room...
    assert bridge._posted.waiting_bytes < _posted.MAX_POSTED_BYTES + item  # ...within the bound
    release.set()
    producer.join(TIMEOUT)
    holder.join(TIMEOUT)
    assert not producer.is_alive() and sent == [1] * 2000
    assert _numbers(peer.events(2001, ("msg",)))[1:] == list(range(2000))


def test_sends_posted_before_stop_go_out_before_the_bye(port: int) -> None:
    rec = Recorder()
    server = make_server(rec)
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME, "--bind", NUMBERED)
    try:
        subscribed(rec, NUMBERED)
        assert sum(server.send_msg(f"n {i}") for i in range(1000)) == 1000
        server.stop()
        events = peer.events(1001, ("msg", "disconnected"))
        assert _numbers(events) == list(range(1000))
        assert events[-1] == {"event": "disconnected", "name": server.agent_name}
        assert server.send_msg("n 1") == 0  # stopped: nothing counted, nothing posted
    finally:
        peer.close()


class FakeBus:
    """What the posted calls use of a bus: its ``send_nowait``, each costing ``cost`` s."""

    def __init__(self, cost: float = 0.0) -> None:
        self.sent: list[str] = []
        self.cost = cost

    def send_nowait(self, text: str) -> int:
        until = time.perf_counter() + self.cost
        while time.perf_counter() < until:
            pass
        self.sent.append(text)
        return 1


async def test_one_failing_posted_call_loses_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    posted, bus, done = _posted.PostedCalls(), FakeBus(), trio.Event()
    posted.open(bus)  # type: ignore[arg-type]

    def bad(bus: object) -> None:
        raise ValueError("boom")

    def produce() -> None:
        assert posted.post("first", 10)
        assert posted.post(bad, 10)
        assert posted.post("second", 10)
        assert posted.post(lambda bus: done.set(), 10)

    await trio.to_thread.run_sync(produce)
    with trio.fail_after(TIMEOUT):
        await done.wait()
    assert bus.sent == ["first", "second"]
    assert "a call posted to the Ivy bus failed" in caplog.text
    posted.close()
    assert not posted.post("late", 10) and posted.waiting_bytes == 0


async def test_the_bus_thread_runs_posted_calls_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted, bus, done = _posted.PostedCalls(), FakeBus(cost=20e-6), trio.Event()
    posted.open(bus)  # type: ignore[arg-type]
    runs: list[float] = []  # each run's CPU time in the bus thread (GIL waits excluded)
    run_slice = posted._run_slice

    def timed_slice() -> None:
        started = time.thread_time()
        run_slice()
        runs.append(time.thread_time() - started)

    monkeypatch.setattr(posted, "_run_slice", timed_slice)

    def produce() -> None:
        for i in range(10_000):  # 200 ms of sends in all
            posted.post(f"n {i}", 10)
        posted.post(lambda bus: done.set(), 10)

    gc.disable()  # (a collection is no run's doing)
    try:
        await trio.to_thread.run_sync(produce)
        with trio.fail_after(TIMEOUT):
            await done.wait()
    finally:
        gc.enable()
    assert bus.sent == [f"n {i}" for i in range(10_000)]
    assert len(runs) >= 50  # 200 ms in slices of 2 ms
    assert max(runs) < 0.01, f"a run held the loop {max(runs) * 1000:.1f} ms"


async def test_a_waited_call_runs_after_what_was_posted_and_brings_back_its_outcome() -> None:
    posted, bus = _posted.PostedCalls(), FakeBus(cost=20e-6)
    posted.open(bus)  # type: ignore[arg-type]

    def boom(bus: object) -> None:
        raise ZeroDivisionError

    def produce() -> tuple[int, type[BaseException]]:
        for i in range(1000):
            posted.post(f"n {i}", 10)
        assert posted.waiting
        sent_before = posted.call(lambda bus: len(bus.sent))  # type: ignore[attr-defined]
        with pytest.raises(ZeroDivisionError) as raised:
            posted.call(boom)
        return sent_before, raised.type

    assert await trio.to_thread.run_sync(produce) == (1000, ZeroDivisionError)


async def test_a_waited_call_on_a_bus_that_stops_raises() -> None:
    posted, bus = _posted.PostedCalls(), FakeBus(cost=20e-6)
    posted.open(bus)  # type: ignore[arg-type]
    posted.post(lambda bus: posted.close(), 10)  # the bus stops before the call runs
    with pytest.raises(IvyIllegalStateError):
        await trio.to_thread.run_sync(posted.call, lambda bus: 1)


async def test_a_costly_posted_call_ends_its_slice() -> None:
    """The clock was looked at every 16 calls: 16 sends of 5 ms held the bus 80 ms."""
    posted, bus, done = _posted.PostedCalls(), FakeBus(cost=0.005), trio.Event()
    posted.open(bus)  # type: ignore[arg-type]
    runs: list[int] = []
    run_slice = posted._run_slice

    def counted_slice() -> None:
        before = len(bus.sent)
        run_slice()
        runs.append(len(bus.sent) - before)

    posted._run_slice = counted_slice  # type: ignore[method-assign]

    def produce() -> None:
        for i in range(40):
            posted.post(f"n {i}", 10)
        posted.post(lambda bus: done.set(), 10)

    await trio.to_thread.run_sync(produce)
    with trio.fail_after(TIMEOUT):
        await done.wait()
    assert len(bus.sent) == 40 and max(runs) == 1, runs


async def test_a_thread_waits_only_for_what_it_posted_itself() -> None:
    posted, bus = _posted.PostedCalls(), FakeBus(cost=0.001)
    posted.open(bus)  # type: ignore[arg-type]
    seen: list[bool] = []

    def produce() -> None:
        for i in range(200):  # 200 ms of sends
            posted.post(f"n {i}", 10)
        seen.append(posted.waiting)

    await trio.to_thread.run_sync(produce)
    # (trio's worker threads are reused: a thread of its own; BusThread.call
    # then goes straight to the bus thread, not behind the 200 ms of sends)
    thread = threading.Thread(target=lambda: seen.append(posted.waiting))
    thread.start()
    await trio.to_thread.run_sync(thread.join)
    assert seen == [True, False]


def test_stop_from_a_callback_while_the_callbacks_queue_is_full(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bus's closing queued the removal of each agent, waiting for room
    the blocked callbacks' thread (in stop()) would never make: a hang."""
    monkeypatch.setattr(callback_thread, "MAX_PENDING_CALLBACKS", 5)
    rec, gate, stopped = Recorder(), threading.Event(), threading.Event()
    server = make_server(rec)
    server.bind_msg(lambda agent, number: gate.wait(TIMEOUT), NUMBERED)
    server.bind_msg(lambda agent: (server.stop(), stopped.set()), "^quit$")
    server.start(f"127:{port}")
    peer = PythonPeer(port, PEER_NAME)
    try:
        peer.expect("regexp", sender=server.agent_name, action="add", regexp="^quit$")
        for i in range(8):
            peer.command("send", text=f"n {i}")
        peer.command("send", text="quit")
        for i in range(50):
            peer.command("send", text=f"n {i}")
        deadline = time.monotonic() + TIMEOUT
        while server._trivy_callbacks.pending()[0] < 5:  # (the queue fills)
            assert time.monotonic() < deadline, "the callbacks' queue never filled"
            stopped.wait(0.01)
        gate.set()  # the numbers run; quit stops the server with the queue full again
        assert stopped.wait(TIMEOUT), "stop() from the callback never returned"
        assert server.server_termination.is_set()
    finally:
        gate.set()
        peer.close()

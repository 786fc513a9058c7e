"""The monitor's server, over real sockets: what the page is fed, what it may do.

A trivy agent and a real ivy-python agent on a private bus; the monitor
joins it and serves on a free loopback port; an HTTP client (httpx) reads
the feed and acts as a page would. The browser itself is in
``test_monitor_browser.py``.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import trivy
from trivy.monitor import Monitor, MonitorOptions, _feed, _hangup, _web, run_monitor
from trivy.monitor._feed import (
    FEED_BUFFER,
    FEED_BYTES,
    FEEDS_BYTES,
    PAGE_TIMEOUT,
    WRITE_PIECE,
    Feed,
    Viewer,
)
from trivy.monitor._grouping import Grouping
from trivy.monitor._hangup import DescriptorReserve, hang_up_pages
from trivy.monitor._json_slices import Encoded, dumps_in_slices
from trivy.monitor._model import (
    AGENTS_PER_UPDATE,
    MAX_AGENTS,
    MAX_KINDS,
    OTHER_KIND,
    SNAPSHOT_SUBSCRIPTIONS,
    SUBSCRIPTIONS_SHOWN,
    TAIL_LINES,
    UPDATE_POINTS,
    BusModel,
)
from trivy.testing import ivy_python_agent, wait_for_subscription

from .heartbeat import LongestStep

TIMEOUT = 20


@asynccontextmanager
async def monitor(bus: str, **options: Any) -> AsyncIterator[Monitor]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(run_monitor, MonitorOptions(bus=bus, port=0, **options))
        nursery.cancel_scope.cancel()


def _page_that_never_reads(url: str) -> socket.socket:
    """A page's connection that asks for the feed, with a small receive
    buffer, and never reads a byte of it."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    page = socket.socket()
    page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    page.connect(("127.0.0.1", port))
    page.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    return page


async def first_event(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    async with client.stream("GET", url + "api/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[6:])
                return event
    raise AssertionError("the feed ended")


async def test_the_feed_shows_agents_kinds_and_the_tail(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            ivy_python_agent(bus, "PYGPS", bind=[r"^GOTO (\S+)"], ready_message="GPS ready"),
            monitor(bus) as running,
            trivy.open_ivy_bus("TRACKER", bus) as tracker,
            httpx.AsyncClient() as client,
        ):
            tracker.subscribe(r"^POS (\S+) (\S+)")
            await wait_for_subscription(running.bus, "TRACKER", r"^POS (\S+) (\S+)")
            await wait_for_subscription(running.bus, "PYGPS", r"^GOTO (\S+)")
            await wait_for_subscription(tracker, "TRIVYMONITOR", "^(.*)$")
            # PYGPS sent its ready message as it took our handshake: its
            # PONG comes after it, so the monitor has read it before the POS
            await running.bus.ping(await running.bus.wait_for_peer("PYGPS"))
            for i in range(10):
                await tracker.send(f"POS {i} {i * 1.5} fix")
            await tracker.ping(await tracker.wait_for_peer("TRIVYMONITOR"))  # (it read them)
            snapshot = await first_event(client, running.url)
            agents = {a["name"]: a for a in snapshot["agents"]}
            assert [s[1] for s in agents["PYGPS"]["subscriptions"]] == [r"^GOTO (\S+)"]
            assert agents["PYGPS"]["ready"] == "GPS ready"
            assert [s[1] for s in agents["TRACKER"]["subscriptions"]] == [r"^POS (\S+) (\S+)"]
            kinds = {k["kind"]: k for k in snapshot["kinds"]}
            assert kinds["POS"]["count"] == 10 and kinds["POS"]["senders"] == ["TRACKER"]
            assert kinds["POS"]["numeric"] == [1, 2]  # ("fix" is not a number)
            assert snapshot["tail"][-1][2:] == ["TRACKER", "POS 9 13.5 fix"]
            window = (await client.get(running.url + "api/window", params={"kind": "POS"})).json()
            assert [point[1:3] for point in window] == [[i, i * 1.5] for i in range(10)]


async def test_the_page_sends_pings_and_dies_only_when_confirmed(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            monitor(bus) as running,
            ivy_python_agent(bus, "PYGPS", bind=[r"^GOTO (\S+)"]) as py,
            httpx.AsyncClient() as client,
        ):
            peer = await wait_for_subscription(running.bus, "PYGPS", r"^GOTO (\S+)")
            key = f"{peer.host}:{peer.port}"
            sent = await client.post(running.url + "api/send", json={"text": "GOTO home"})
            assert sent.json() == {"sent_to": 1}
            msg = await py.expect("msg")
            assert (msg["sender"], msg["groups"]) == ("TRIVYMONITOR", ["home"])
            ping = (await client.post(running.url + "api/ping", json={"agent": key})).json()
            assert ping["round_trip_ms"] > 0
            refused = await client.post(running.url + "api/die", json={"agent": key})
            assert refused.status_code == 400 and "confirm" in refused.json()["error"]
            assert running.bus.peer("PYGPS") is not None
            async with running.bus.events() as events:
                confirmed = {"agent": key, "confirm": True}
                died = await client.post(running.url + "api/die", json=confirmed)
                assert died.json() == {"sent": True}
                while running.bus.peer("PYGPS") is not None:
                    await events.receive()
            bad = await client.post(running.url + "api/send", json={"text": "two\nlines"})
            assert bad.status_code == 400


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"origin": "http://evil.example"}, "cross-origin"),
        ({"host": "evil.example"}, "unknown host"),  # (DNS rebinding)
    ],
)
async def test_another_site_cannot_drive_the_bus(
    bus: str, headers: dict[str, str], said: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with monitor(bus) as running, httpx.AsyncClient() as client:
            for method, path in (("POST", "api/send"), ("GET", "api/events"), ("GET", "")):
                answer = await client.request(
                    method, running.url + path, json={"text": "x"}, headers=headers
                )
                assert answer.status_code == 403 and said in answer.text


async def test_a_token_is_needed_when_there_is_one(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with monitor(bus, token="s3cret") as running, httpx.AsyncClient() as client:
            assert running.url.endswith("/?token=s3cret")
            bare = running.url.split("?")[0]
            assert (await client.get(bare)).status_code == 403
            assert (await client.get(bare + "?token=wrong")).status_code == 403
            assert (await client.post(bare + "api/send", json={"text": "x"})).status_code == 403
            page = await client.get(running.url)  # (the address printed: sets the cookie)
            assert page.status_code == 200
            assert (await client.post(bare + "api/send", json={"text": "x"})).status_code == 200


async def test_off_loopback_a_token_is_always_made(bus: str) -> None:
    """Bound to every address (reached here through loopback only), the monitor
    makes a token, prints it in its address, and refuses whoever lacks it."""
    with trio.fail_after(TIMEOUT):
        async with monitor(bus, host="0.0.0.0") as running, httpx.AsyncClient() as client:
            assert "?token=" in running.url
            port = running.url.split(":")[2].split("/")[0]
            token = running.url.split("?token=")[1]
            assert len(token) >= 24
            local = f"http://127.0.0.1:{port}/"
            assert (await client.get(local)).status_code == 403
            assert (await client.get(local + "api/events")).status_code == 403
            assert (await client.get(local, params={"token": token})).status_code == 200


async def test_a_stalled_page_gets_updates_dropped_not_memory(bus: str) -> None:
    """A page that stops reading: once the sockets' buffers are full, the server
    holds FEED_BUFFER updates for it and counts the rest; when it reads again,
    it gets a snapshot that says how many it missed."""
    with trio.fail_after(60):
        async with (
            monitor(bus, update_interval=0.01) as running,
            trivy.open_ivy_bus("FLOOD", bus) as flood,
            httpx.AsyncClient() as client,
        ):
            await wait_for_subscription(flood, "TRIVYMONITOR", "^(.*)$")
            async with client.stream("GET", running.url + "api/events") as stream:
                lines = stream.aiter_lines()
                async for line in lines:  # the snapshot: the page is registered
                    if line.startswith("data: "):
                        break
                (viewer,) = running.feed.viewers
                i = 0
                while viewer.dropped < 3:  # (big updates: each a tail of long texts)
                    await flood.send(f"DATA {i} " + "x" * 290)
                    i += 1
                assert viewer.send.statistics().current_buffer_used <= FEED_BUFFER
                async for line in lines:
                    if line.startswith("data: ") and '"type": "dropped"' in line:
                        note = json.loads(line[6:])
                        break
                assert note["dropped"] >= 3
                async for line in lines:  # ...and everything again, right after
                    if line.startswith("data: "):
                        assert json.loads(line[6:])["type"] == "snapshot"
                        break


async def test_a_stalled_page_holds_a_bounded_size_of_updates() -> None:
    """Texts of astral characters take 12 bytes each in JSON: 32 pages that
    never read, 32 updates each, held the monitor 2.2 GB."""
    feed = Feed(BusModel())
    viewer = Viewer()
    feed.viewers.add(viewer)
    update = {"type": "update", "tail": [["\U0001f600" * 100_000]]}  # 1.2 MB of JSON
    size = len(json.dumps(update))
    for _ in range(FEED_BUFFER):
        await feed.publish(update)
    held = []
    while True:
        try:
            held.append(viewer.receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert sum(map(len, held)) <= FEED_BYTES + size, sum(map(len, held))  # (38 MB before)
    assert viewer.held == sum(map(len, held))  # (what the stream takes is given back there)
    kinds = [json.loads(payload.text())["type"] for payload in held]
    # every update queued or dropped; its snapshot waits until it took them all
    assert kinds == ["update"] * len(held)
    assert viewer.dropped + len(held) == FEED_BUFFER


async def test_the_pages_share_what_waits_for_them_and_its_bound() -> None:
    """Each stalled page held its own snapshots (about 20 MB each with astral
    texts): 32 of them held 1.6 GB. A string waiting for many pages is now
    counted, and held, once; all the pages together hold FEEDS_BYTES at most."""
    feed = Feed(BusModel())
    viewers = [await feed.open_page() for _ in range(_web.MAX_VIEWERS)]
    assert all(viewers)
    update = {"type": "update", "tail": [["\U0001f600" * 100_000]]}  # 1.2 MB of JSON
    for _ in range(FEED_BUFFER):
        await feed.publish(update)
    per_page = max(viewer.held for viewer, _ in filter(None, viewers))
    # one page's worth, and the pages' small notes and snapshots (x 32: 230 MB)
    assert feed.held_bytes < per_page + 100_000, feed.held_bytes
    for viewer, _ in filter(None, viewers):
        feed.close_page(viewer)
    # snapshots made apart (pages opened between updates) are each counted
    big = {"type": "snapshot", "tail": ["x" * (20 * 1024 * 1024)]}
    feed.model.snapshot = lambda _now: big  # type: ignore[method-assign]
    opened = []
    for _ in range(4):
        opened.append(await feed.open_page())
        await feed.publish({"type": "update"})
    assert opened[3] is None and all(opened[:3])  # (the fourth: over FEEDS_BYTES)
    size = 3 * len(json.dumps(big))  # (and the small updates that wait for them)
    assert size <= feed.held_bytes < size + 1000 and size <= FEEDS_BYTES  # (the others': freed)


async def test_a_page_is_written_in_pieces_and_gives_all_back() -> None:
    feed = Feed(BusModel())
    opened = await feed.open_page()
    assert opened is not None
    viewer, first = opened
    await feed.publish({"type": "update", "tail": [["x" * 300_000]]})
    stream = feed.stream(viewer, first)
    pieces = [await stream.__anext__() for _ in range(3)]  # the snapshot
    assert pieces[0] == "data: " and pieces[2] == "\n\n"
    pieces = [await stream.__anext__() for _ in range(4)]
    assert max(map(len, pieces)) <= WRITE_PIECE  # (the update, a piece at a time)
    await stream.aclose()  # (the response ends in the middle of it)
    feed.close_page(viewer)
    assert feed.held_bytes == 0 and not feed.viewers


async def test_a_page_that_takes_nothing_for_long_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed(BusModel())
    opened = await feed.open_page()
    assert opened is not None
    viewer, _ = opened
    await feed.publish({"type": "update"})  # (waits for it: it takes nothing)
    await trio.sleep(PAGE_TIMEOUT / 2)
    await feed.publish({"type": "update"})
    assert not viewer.scope.cancel_called
    await trio.sleep(PAGE_TIMEOUT / 2 + 1)
    await feed.publish({"type": "update"})
    assert viewer.scope.cancel_called  # (its response ends: close_page frees the rest)


async def test_a_page_that_never_reads_is_closed_and_frees_all(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server writes to a page shielded from cancellation: a page that
    never read kept its place (and locked new pages out) for as long as it
    kept its connection open. Its connection is now aborted by the kernel."""
    monkeypatch.setattr(_feed, "PAGE_TIMEOUT", 1.0)
    with trio.fail_after(TIMEOUT):
        async with (
            monitor(bus, update_interval=0.01) as running,
            trivy.open_ivy_bus("FLOOD", bus) as flood,
        ):
            await wait_for_subscription(flood, "TRIVYMONITOR", "^(.*)$")
            sock = _page_that_never_reads(running.url)
            opened, i = False, 0
            while not opened or running.feed.viewers:  # (it never reads a byte)
                opened = opened or bool(running.feed.viewers)
                await flood.send(f"DATA {i} " + "x" * 290)
                i += 1
                await trio.sleep(0.001)  # (a flood at a pace)
            assert running.feed.held_bytes == 0
            sock.close()


async def test_stopping_does_not_wait_for_a_page_that_never_reads(bus: str) -> None:
    """The server's write to a page is shielded from cancellation: with a
    page that read nothing, stopping the monitor waited 30 s (until the
    kernel gave the connection up). Its pages are now hung up on; the
    process's other connections (the bus's) are left alone."""
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("FLOOD", bus) as flood,
            trivy.open_ivy_bus("OTHER", bus) as other,
            other.subscribe("^after (.*)") as after,
        ):
            async with trio.open_nursery() as nursery:
                options = MonitorOptions(bus=bus, port=0, update_interval=0.01)
                running = await nursery.start(run_monitor, options)
                await wait_for_subscription(flood, "TRIVYMONITOR", "^(.*)$")
                page = _page_that_never_reads(running.url)
                i = 0  # (until updates are dropped for it: the server's write waits)
                while not any(viewer.dropped for viewer in running.feed.viewers):
                    await flood.send(f"DATA {i} " + "x" * 290)
                    i += 1
                    await trio.sleep(0.001)  # (a flood at a pace)
                stopping = trio.current_time()
                nursery.cancel_scope.cancel()
            assert trio.current_time() - stopping < 2  # (30 s before)
            await wait_for_subscription(flood, "OTHER", "^after (.*)")
            await flood.send("after stop")
            assert (await after.receive()).groups == ("stop",)
            page.close()


@pytest.mark.parametrize("tables", ["kernel", "none"])
def test_hanging_up_touches_only_the_connections_accepted_on_the_address(
    tables: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By the kernel's table of connections (Linux), or, without one, by
    asking each socket its addresses; either way no other socket changes:
    asking made every socket of the process non-blocking under a default
    timeout (its file's flag, shared with its owner)."""
    if tables == "none":
        monkeypatch.setattr(_hangup, "_TCP_TABLES", {f: "/nonexistent" for f in (2, 10)})
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    clients = [socket.create_connection(lst.getsockname()) for lst in listeners]
    accepted = [lst.accept()[0] for lst in listeners]
    unrelated = socket.socketpair()
    socket.setdefaulttimeout(10)
    try:
        assert hang_up_pages(listeners[0].getsockname()) == 1
        for sock in (*unrelated, clients[1], accepted[1]):  # (the file's flag itself)
            assert not fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert clients[0].recv(1) == b""  # (hung up)
        clients[1].sendall(b"x")  # (the other server's: still connected)
        assert accepted[1].recv(1) == b"x"
        accepted[1].sendall(b"y")
        assert clients[1].recv(1) == b"y"
        wildcard = ("0.0.0.0", listeners[1].getsockname()[1])
        assert hang_up_pages(wildcard) == 1  # (every address of the port)
        assert clients[1].recv(1) == b""
        # another family's server on the same port is not ours
        v6_port = listeners[1].getsockname()[1]
        for sock in (clients[1], accepted[1]):
            sock.close()
        try:
            v6 = socket.create_server(("::1", v6_port), family=socket.AF_INET6)
        except OSError:
            return  # (no IPv6 loopback here)
        with (
            v6,
            socket.create_connection(("::1", v6_port)) as v6_client,
            v6.accept()[0] as v6_accepted,
        ):
            assert hang_up_pages(wildcard) == 0
            v6_client.sendall(b"z")
            assert v6_accepted.recv(1) == b"z"
    finally:
        socket.setdefaulttimeout(None)
        for sock in (*listeners, *clients, *accepted, *unrelated):
            sock.close()


def test_with_every_descriptor_taken_the_reserve_still_lets_pages_be_hung_up() -> None:
    """A client holding hundreds of requests open can take every descriptor:
    listing them and shutting a page down need one (0 hung up before)."""
    server = socket.create_server(("127.0.0.1", 0))
    page = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = DescriptorReserve()
    taken = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        reserve.release()
        assert hang_up_pages(server.getsockname()) == 1
        assert page.recv(1) == b""
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sock in (server, page, accepted):
            sock.close()


def test_the_model_is_bounded() -> None:
    model = BusModel()
    for i in range(MAX_KINDS + 100):
        model.text(1.0, "A", f"K{i} 1 2")
    assert len(model.kinds) == MAX_KINDS + 1  # (and the other kinds, together)
    assert model.kinds[OTHER_KIND].count == 100
    for _ in range(TAIL_LINES * 3):
        model.text(2.0, "A", "x" * 10_000)
    assert len(model.tail) == TAIL_LINES and max(len(t) for _, _, _, t in model.tail) <= 300
    update = model.changes(3.0)
    assert update is not None and len(update["tail"]) <= TAIL_LINES


def test_rates_are_measured_every_second_per_kind_and_per_sender() -> None:
    model = BusModel()
    for i in range(20):  # 30 texts in the first second: 20 from A, 10 from B
        model.text(i * 0.05, "A", f"POS {i}")
        if i % 2 == 0:
            model.text(i * 0.05, "B", f"POS {i}")
    model.changes(0.5)  # (under a second: not measured yet)
    update = model.changes(1.0)
    assert update is not None
    assert [k["rate"] for k in update["kinds"]] == [30.0]
    assert update["rates"] == {"A": 20.0, "B": 10.0}
    assert model.window("rate:A")[-1][1:] == [20.0]
    update = model.changes(2.0)  # a quiet second: the rates fall to 0
    assert update is not None and update["rates"] == {"A": 0.0, "B": 0.0}


KINDS = r"^(?P<kind>TRACK) id=\S+ alt=(?P<alt>\S+) spd=(?P<spd>\S+)"


async def test_a_user_regexp_makes_kinds_and_named_fields(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            monitor(bus, kinds=KINDS) as running,
            trivy.open_ivy_bus("RADAR", bus) as radar,
            httpx.AsyncClient() as client,
        ):
            await wait_for_subscription(radar, "TRIVYMONITOR", "^(.*)$")
            for i in range(5):
                await radar.send(f"TRACK id=AF{i} alt={300 + i} spd=12.5")
            await radar.send("PING-LIKE 1 2")  # (not matched: its first word)
            await radar.ping(await radar.wait_for_peer("TRIVYMONITOR"))
            kinds = {k["kind"]: k for k in (await first_event(client, running.url))["kinds"]}
            assert kinds["TRACK"]["fields"] == ["alt", "spd"]
            assert kinds["TRACK"]["numeric"] == [1, 2] and kinds["TRACK"]["count"] == 5
            assert kinds["PING-LIKE"]["fields"] is None and kinds["PING-LIKE"]["numeric"] == [1, 2]
            window = (await client.get(running.url + "api/window", params={"kind": "TRACK"})).json()
            assert [point[1:] for point in window] == [[300 + i, 12.5] for i in range(5)]


def test_a_slow_user_regexp_runs_out_of_time_not_the_loop() -> None:
    model = BusModel(Grouping(r"(x+x+)+y", 16))
    started = time.perf_counter()
    model.text(1.0, "A", "x" * 100)  # (backtracks for years without a limit)
    assert time.perf_counter() - started < 0.5
    assert model.grouping is not None and model.grouping.timeouts == 1
    assert model.kinds["x" * 64].count == 1  # (grouped by its first word, cut to 64)


def test_a_bad_user_regexp_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="bad --kinds regexp"):
        MonitorOptions(kinds="(unclosed")


async def test_big_bodies_and_too_many_pages_are_refused(
    bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_web, "MAX_VIEWERS", 1)
    with trio.fail_after(TIMEOUT):
        async with monitor(bus) as running, httpx.AsyncClient() as client:
            huge = {"text": "x" * (_web.MAX_BODY + 1)}
            answer = await client.post(running.url + "api/send", json=huge)
            assert answer.status_code == 413
            async with client.stream("GET", running.url + "api/events") as first:
                async for line in first.aiter_lines():  # (registered once it has its snapshot)
                    if line.startswith("data: "):
                        break
                second = await client.get(running.url + "api/events")
                assert second.status_code == 503


async def test_pages_that_come_together_are_counted_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Feed requests that arrive together, from clients that read nothing: only
    MAX_VIEWERS are answered 200, one snapshot is made for them all, and every
    place is given back when the clients go (before or after the answer)."""
    monkeypatch.setattr(_web, "MAX_VIEWERS", 2)
    model = BusModel()
    model.agent_seen(0.0, "h:1", "A", "h", {1: "^x"})
    made = []
    snapshot = model.snapshot
    monkeypatch.setattr(model, "snapshot", lambda now: made.append(now) or snapshot(now))
    feed = _web.Feed(model)
    app = _web.build_app(feed, {}, allowed_hosts={"monitor"}, token=None)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/events",
        "raw_path": b"/api/events",
        "query_string": b"",
        "headers": [(b"host", b"monitor")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def stalled(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
            if message["status"] == 200:
                await trio.sleep_forever()

    async def gone(message: dict[str, Any]) -> None:
        raise OSError("the client is gone")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(app, dict(scope), receive, stalled)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(statuses) == [200, 200] + [503] * 8
            assert len(feed.viewers) == 2 and len(made) == 1
            for viewer in list(feed.viewers):  # as for pages that take nothing for long
                viewer.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert feed.viewers == set() and feed.held_bytes == 0
            nursery.cancel_scope.cancel()
        assert feed.viewers == set()
        with pytest.raises(OSError):
            await app(dict(scope), receive, gone)
        assert feed.viewers == set()


def test_an_agent_shows_its_first_regexps_and_how_many_more() -> None:
    model = BusModel()
    subs = {i: f"^R{i} " + "x" * 10_000 for i in range(10_000)}
    model.agent_seen(0.0, "h:1", "A" * 10_000, "h", subs)
    update = model.changes(1.0)
    assert update is not None
    (agent,) = update["agents"]
    assert len(agent["subscriptions"]) == SUBSCRIPTIONS_SHOWN
    assert agent["more_subscriptions"] == 10_000 - SUBSCRIPTIONS_SHOWN
    assert agent["subscriptions"][0][1].startswith("^R0 ")
    assert len(json.dumps(agent)) < SUBSCRIPTIONS_SHOWN * 320 + 1000
    model.text(1.0, "B" * 10_000, "POS 1")  # (a sender's name is cut as an agent's is)
    assert max(len(sender) for sender in model.senders) <= 300


def test_an_update_carries_a_bounded_number_of_agents_all_in_turn() -> None:
    model = BusModel()
    keys = [f"h:{i}" for i in range(100)]
    for key in keys:
        model.agent_seen(0.0, key, key, "h", {1: "^x"})
    seen: set[str] = set()
    for tick in range(1, 100):
        model.agent_seen(tick, keys[0], "A", "h", {1: f"^{tick}"})  # (one keeps changing)
        update = model.changes(float(tick))
        assert update is not None and len(update["agents"]) <= AGENTS_PER_UPDATE
        seen.update(agent["key"] for agent in update["agents"])
        if seen == set(keys):
            break
    assert seen == set(keys) and tick <= 100 // (AGENTS_PER_UPDATE - 1) + 1


def test_a_snapshot_is_bounded_and_the_rest_follows_in_updates() -> None:
    model = BusModel()
    subs = {i: "x" * 300 for i in range(1000)}
    for i in range(MAX_AGENTS + 10):
        model.agent_seen(0.0, f"h:{i}", f"A{i}", "h", subs)
    model.changes(0.0)
    snapshot = model.snapshot(1.0)
    assert len(snapshot["agents"]) == MAX_AGENTS
    assert sum(len(a["subscriptions"]) for a in snapshot["agents"]) == SNAPSHOT_SUBSCRIPTIONS
    assert len(json.dumps(snapshot)) < SNAPSHOT_SUBSCRIPTIONS * 320 + MAX_AGENTS * 200
    for tick in range(2, 1000):  # the agents cut short come in full, in turn
        update = model.changes(float(tick))
        if update is None:
            break
        assert all(len(a["subscriptions"]) == SUBSCRIPTIONS_SHOWN for a in update["agents"])
    assert tick - 2 == -(
        -(MAX_AGENTS - SNAPSHOT_SUBSCRIPTIONS // SUBSCRIPTIONS_SHOWN) // AGENTS_PER_UPDATE
    )


def test_an_update_carries_a_bounded_number_of_points() -> None:
    model = BusModel()
    for i in range(MAX_KINDS):
        for j in range(100):
            model.text(1.0, "A", f"K{i} {j} " + " ".join(["1"] * 15))
    update = model.changes(1.0)
    assert update is not None
    assert sum(len(points) for points in update["points"].values()) == UPDATE_POINTS
    assert len(json.dumps(update)) < 2_000_000


def _full_model() -> BusModel:
    """A model at its bounds, of astral characters (12 bytes each in JSON)."""
    model = BusModel()
    astral = "\U0001f600"
    long = astral * 16_384
    subs = {i: long for i in range(SUBSCRIPTIONS_SHOWN)}
    for i in range(MAX_AGENTS):
        model.agent_seen(0.0, f"h:{i}", f"{i}{long}", "h", subs)
        for _ in range(5):
            model.agent_note(f"h:{i}", error=long)
    for kind in range(MAX_KINDS):
        for sender in range(8):
            model.text(0.0, f"{sender}{long}", f"K{kind}{astral * 60} {long}")
    for _ in range(TAIL_LINES):
        model.text(0.0, long, long)
    return model


async def test_a_full_snapshot_does_not_hold_the_loop_and_pages_share_it() -> None:
    """A full model's snapshot is tens of MB of JSON: encoded in one call
    when a page opened, it held the loop 40 to 110 ms. It is now encoded a
    slice at a time, once for the pages that open meanwhile."""
    feed = Feed(_full_model())
    firsts: list[Encoded] = []

    async def open_one() -> None:
        opened = await feed.open_page()
        assert opened is not None
        firsts.append(opened[1])

    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    gc.disable()  # (a collection of the tests' heap is no step of ours)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(open_one)
    finally:
        gc.enable()
        trio.lowlevel.remove_instrument(steps)
    assert len(firsts[0]) > 10_000_000
    assert firsts[1] is firsts[0] and firsts[2] is firsts[0]  # (made once...)
    assert feed.held_bytes == len(firsts[0])  # (...and held once)
    assert steps.longest < 0.025, steps.longest  # (the model's copy, then 2 ms slices)
    assert json.loads(firsts[0].text())["agents"][-1]["errors"] == ["\U0001f600" * 300] * 5


async def test_messages_encoded_in_slices_are_what_json_makes() -> None:
    model = _full_model()
    for message in (model.snapshot(1.0), model.changes(1.0), {"rates": {1: 2.0, "a": None}}):
        assert message is not None
        assert (await dumps_in_slices(message)).text() == json.dumps(message)


async def test_a_page_that_takes_a_long_snapshot_slowly_is_not_closed(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page reading 1.2 MB a second never finished a 50 MB snapshot: it
    was closed at 30 s, as if it took nothing, and again once reconnected.
    Taking a piece of a message now counts as taking."""
    feed = Feed(BusModel())
    big = {"type": "snapshot", "tail": ["x" * (40 * WRITE_PIECE)]}
    monkeypatch.setattr(feed.model, "snapshot", lambda _now: big)
    opened = await feed.open_page()
    assert opened is not None
    viewer, first = opened
    stream = feed.stream(viewer, first)
    assert await stream.__anext__() == "data: "
    for _ in range(40):  # (a piece every 10 s: 400 s for the snapshot)
        assert len(await stream.__anext__()) == WRITE_PIECE
        await trio.sleep(10)
        await feed.publish({"type": "update"})  # (it waits for the page)
    assert not viewer.scope.cancel_called
    await trio.sleep(PAGE_TIMEOUT + 1)  # (then it takes nothing)
    await feed.publish({"type": "update"})
    assert viewer.scope.cancel_called
    await stream.aclose()
    feed.close_page(viewer)


async def test_a_page_that_would_not_fit_is_refused_before_its_snapshot_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page refused for lack of room had a full snapshot made for it
    first: a client reopening pages kept the loop encoding 50 MB ones."""
    feed = Feed(BusModel())
    made = []
    big = {"type": "snapshot", "tail": ["x" * (40 * 1024 * 1024)]}
    monkeypatch.setattr(feed.model, "snapshot", lambda _now: made.append(1) or big)
    assert await feed.open_page() is not None  # (it never reads: its snapshot is held)
    for _ in range(3):
        await feed.publish({"type": "update"})
        assert await feed.open_page() is None  # (40 + 40 MB over FEEDS_BYTES)
    assert len(made) == 1  # (4 before)


async def test_one_snapshot_is_encoded_at_a_time_and_none_kept_for_no_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = BusModel()  # (a snapshot of several slices, three of which fit FEEDS_BYTES)
    for i in range(MAX_AGENTS):
        model.agent_seen(0.0, f"h:{i}", f"A{i}" * 100, "h", {j: "x" * 300 for j in range(100)})
    feed = Feed(model)
    in_flight, most = 0, 0
    make = feed._make_snapshot

    async def counted() -> Encoded:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await make()
        finally:
            in_flight -= 1

    monkeypatch.setattr(feed, "_make_snapshot", counted)
    opened: list[Any] = []

    async def open_one() -> None:
        opened.append(await feed.open_page())

    async with trio.open_nursery() as nursery:
        for _ in range(3):  # (pages opening between updates: each its own snapshot)
            nursery.start_soon(open_one)
            await trio.lowlevel.checkpoint()  # (its snapshot started, a slice encoded...)
            await feed.publish({"type": "update"})  # (...and an update before it is done)
    assert most == 1 and all(opened)
    for viewer, _ in opened:
        feed.close_page(viewer)
    assert feed.held_bytes == 0 and not feed._snapshot_ready()


async def test_a_kinds_points_and_its_window_are_encoded_point_by_point() -> None:
    """One kind's 600 points of 16 numbers that print slowly were one item:
    25 ms of the loop for an update (or a plot's window) of them."""
    slow = -1.2345678901234567e-300
    points = [[float(t), *[slow] * 16] for t in range(600)]
    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    gc.disable()  # (a collection of the tests' heap is no step of ours)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dumps_in_slices, {"type": "update", "points": {"W": points}})
            nursery.start_soon(dumps_in_slices, points)
    finally:
        gc.enable()
        trio.lowlevel.remove_instrument(steps)
    assert steps.longest < 0.010, steps.longest

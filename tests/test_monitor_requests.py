"""What one HTTP client can make the monitor hold, over real sockets: an
action's body however it is framed or paced, the plots' windows, requests
of other pages that send no Origin."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

import trivy
from trivy.monitor import Monitor, _web
from trivy.testing import wait_for_subscription

from .heartbeat import LongestStep
from .test_monitor import TIMEOUT, monitor


def _port(url: str) -> int:
    return int(url.split("?")[0].rstrip("/").rsplit(":", 1)[1])


async def _raw(port: int, head: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head)
    return stream


async def _answer(stream: trio.SocketStream) -> bytes:
    """Everything the server says until it closes the connection."""
    said = b""
    while chunk := await stream.receive_some(65536):
        said += chunk
    return said


async def test_a_chunked_body_with_a_small_length_is_refused_unread(bus: str) -> None:
    """``Content-Length: 5`` and a chunked body of 400 MB: h11 follows the
    chunks, and the whole body was read (840 MB, one step of 2.9 s) before
    the answer."""
    with trio.fail_after(TIMEOUT):
        async with monitor(bus) as running:
            port = _port(running.url)
            stream = await _raw(
                port,
                b"POST /api/send HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                b"Content-Type: application/json\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % port,
            )
            longest = LongestStep()
            trio.lowlevel.add_instrument(longest)
            await trio.lowlevel.checkpoint()
            chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
            sent = 0
            with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
                for _ in range(400):  # (until the server hangs up)
                    await stream.send_all(chunk)
                    sent += 1
            await trio.lowlevel.checkpoint()
            trio.lowlevel.remove_instrument(longest)
            with trio.move_on_after(5), contextlib.suppress(trio.BrokenResourceError):
                said = await _answer(stream)
                assert said.startswith(b"HTTP/1.1 413"), said[:80]
            assert sent < 40, sent  # (the server read none of it: what the kernel took)
            assert longest.longest < 0.5, longest.longest


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_body_that_never_comes_is_given_up(
    bus: str, framing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST that announced a body and never sent it held its connection
    for ever: 20,000 of them took every descriptor."""
    monkeypatch.setattr(_web, "BODY_TIMEOUT", 0.5)
    with trio.fail_after(TIMEOUT):
        async with monitor(bus) as running:
            port = _port(running.url)
            frame = b"Content-Length: 100" if framing == "length" else b"Transfer-Encoding: chunked"
            stream = await _raw(
                port,
                b"POST /api/send HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n\r\n{" % (port, frame),
            )
            said = await _answer(stream)  # (the server ends it)
            assert said.split(b" ", 2)[1] in (b"408", b"413"), said[:80]


async def test_a_body_within_the_bound_still_acts(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("WATCHER", bus) as watcher,
            watcher.subscribe("^(from the page.*)") as texts,
            monitor(bus) as running,
            httpx.AsyncClient() as client,
        ):
            await wait_for_subscription(running.bus, "WATCHER", "^(from the page.*)")
            answer = await client.post(running.url + "api/send", json={"text": "from the page"})
            assert answer.status_code == 200, answer.text
            assert (await texts.receive()).groups == ("from the page",)
            nested = "[" * 100_000 + "]" * 100_000
            answer = await client.post(
                running.url + "api/send",
                content=nested,
                headers={"content-type": "application/json"},
            )
            assert answer.status_code in (400, 413)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_request_of_another_page_without_origin_is_refused(bus: str, site: str) -> None:
    """An ``<img src=".../api/events">`` of another site sends no Origin: it
    opened feeds, taking the pages' places. (Another port of the same host
    is the same site, not the same origin.)"""
    with trio.fail_after(TIMEOUT):
        async with monitor(bus) as running, httpx.AsyncClient() as client:
            for path in ("api/events", "api/window?kind=x", ""):
                answer = await client.get(running.url + path, headers={"sec-fetch-site": site})
                assert answer.status_code == 403, path
            ours = await client.get(running.url, headers={"sec-fetch-site": "same-origin"})
            assert ours.status_code == 200


async def _until_counted(client: httpx.AsyncClient, url: str, kind: str, count: int) -> None:
    """Read the feed until it says ``count`` texts of ``kind`` arrived."""
    async with client.stream("GET", url + "api/events") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                for summary in json.loads(line[6:]).get("kinds", []):
                    if summary["kind"] == kind and summary["count"] >= count:
                        return
    raise AssertionError("the feed ended")


@asynccontextmanager
async def _plotted(bus: str) -> AsyncIterator[tuple[trivy.IvyBus, Monitor, httpx.AsyncClient]]:
    """An agent whose texts the monitor hears, the monitor, and a page's client."""
    async with (
        trivy.open_ivy_bus("PLOTTED", bus) as agent,
        monitor(bus) as running,
        httpx.AsyncClient() as client,
    ):
        await wait_for_subscription(agent, "TRIVYMONITOR", "^(.*)$")
        yield agent, running, client


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the monitor encodes in slices (each window it encodes), as it does."""
    made: list[object] = []
    real = _web.dumps_in_slices

    async def counting(message: Any) -> Any:
        made.append(message)
        return await real(message)

    monkeypatch.setattr(_web, "dumps_in_slices", counting)
    return made


async def test_a_window_is_encoded_once_and_shared(bus: str, encoded: list[object]) -> None:
    """Each request encoded the window anew (30 ms at its bound) and kept a
    copy for its connection: 1,140 clients that never read held 270 MB.
    It is encoded once per change of its kind, as bytes all responses share."""
    with trio.fail_after(TIMEOUT):
        async with _plotted(bus) as (agent, running, client):
            for value in range(5):
                await agent.send(f"temp {value}")
            await _until_counted(client, running.url, "temp", 5)
            url = running.url + "api/window?kind=temp"
            first = (await client.get(url)).json()
            assert [point[1] for point in first] == [0, 1, 2, 3, 4]
            answers = [(await client.get(url)).json() for _ in range(20)]
            assert all(answer == first for answer in answers)
            assert len(encoded) == 1  # (no change: not encoded again)
            junk = await client.get(running.url + "api/window?kind=" + "j" * 1000)
            assert junk.json() == [] and len(encoded) == 1  # (no such kind: nothing kept)
            await agent.send("temp 99")
            await _until_counted(client, running.url, "temp", 6)
            assert [point[1] for point in (await client.get(url)).json()][-1] == 99
            assert len(encoded) == 2


async def test_the_windows_kept_are_those_last_asked_for(bus: str, encoded: list[object]) -> None:
    """64 windows are kept: the one asked for again stays, the least lately
    asked for goes (they went in the order they were first encoded)."""
    kinds = [f"k{i}" for i in range(_web.WINDOWS_KEPT + 1)]
    with trio.fail_after(TIMEOUT):
        async with _plotted(bus) as (agent, running, client):
            for kind in kinds:
                await agent.send(f"{kind} 1")
            await _until_counted(client, running.url, kinds[-1], 1)

            async def window(kind: str) -> None:
                assert (await client.get(running.url + "api/window?kind=" + kind)).json()

            for kind in kinds[:-1]:  # (64 kept)
                await window(kind)
            await window(kinds[0])  # (asked for again: the latest)
            await window(kinds[-1])  # (one more: the least lately asked for goes)
            before = len(encoded)
            await window(kinds[0])
            assert len(encoded) == before  # (still kept)
            await window(kinds[1])
            assert len(encoded) == before + 1  # (gone: encoded again)

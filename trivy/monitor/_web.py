"""The monitor's web side: an ASGI app (Starlette), the live feed, the actions.

The feed is server-sent events: one way (the page only listens), plain
HTTP (nothing to upgrade, through any proxy), and the browser reconnects
by itself. What the page does goes as POSTs. Every request is checked:

- *Host* is one of ours (a page of another site cannot reach us through
  a DNS name it rebinds to our address);
- *Origin*, when the browser sends one, is ours (another site's page in
  the same browser cannot drive the bus);
- the token, when there is one (required off loopback), is given: in the
  address once (``?token=``), then in a cookie only this origin reads.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._model import BusModel

__all__ = ["FEED_BUFFER", "FEED_BYTES", "MAX_BODY", "MAX_VIEWERS", "Feed", "Viewer", "build_app"]

#: Updates held for one page; past them, updates are dropped for it (a
#: slow or stalled tab), counted, and the next one it gets is a snapshot.
FEED_BUFFER = 32
#: ...and bytes of them (one is always taken): pages that never read, fed
#: texts of astral characters (12 bytes each in JSON), held 2.2 GB.
FEED_BYTES = 8 * 1024 * 1024
COOKIE = "trivy_monitor_token"
#: Pages open at once (each holds up to FEED_BUFFER updates); more are refused.
MAX_VIEWERS = 32
#: Bytes of an action's JSON body (with its Content-Length); more are refused.
MAX_BODY = 64 * 1024
STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}


class Viewer:
    """One open page: its queue of updates."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[str](FEED_BUFFER)
        self.held = 0  # characters of the updates waiting for it
        self.dropped = 0
        self.resync = False


class Feed:
    """The open pages, and what goes to each."""

    def __init__(self, model: BusModel) -> None:
        self.model = model
        #: The open pages, and those being opened (counted from their request on).
        self.viewers: set[Viewer] = set()
        self._snapshot: str | None = None

    def snapshot(self) -> str:
        """The model's snapshot, as JSON: made at most once between two updates
        (the updates that follow carry whatever changed since the last one)."""
        if self._snapshot is None:
            self._snapshot = json.dumps(self.model.snapshot(trio.current_time()))
        return self._snapshot

    def publish(self, update: dict[str, Any]) -> None:
        """One update to every page; a page that is behind gets it dropped."""
        payload = json.dumps(update)
        self._snapshot = None  # (taken before this update: it may miss its changes)
        for viewer in self.viewers:
            payload_for = payload
            if viewer.resync:  # (it missed updates: all of it again, once it has room)
                if not _has_room(viewer, len(self.snapshot())):
                    viewer.dropped += 1
                    continue
                payload_for = f'{self.snapshot()[:-1]}, "dropped": {viewer.dropped}}}'
            if not _has_room(viewer, len(payload_for)):
                viewer.dropped += 1
                viewer.resync = True
                continue
            viewer.send.send_nowait(payload_for)  # (room checked)
            viewer.held += len(payload_for)
            viewer.resync = False


def _has_room(viewer: Viewer, size: int) -> bool:
    if viewer.send.statistics().current_buffer_used >= FEED_BUFFER:
        return False
    return not viewer.held or viewer.held + size <= FEED_BYTES


Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def build_app(
    feed: Feed,
    actions: dict[str, Action],
    *,
    allowed_hosts: set[str] | None,
    token: str | None,
) -> Starlette:
    """The app: the page, its assets, the feed, the plots' windows, the actions.

    ``allowed_hosts``: the Host headers accepted (``None``: any, when a
    token guards the monitor). ``actions``: name -> coroutine taking the
    request's JSON and returning the answer's.
    """

    def refused(request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if allowed_hosts is not None and host not in allowed_hosts:
            return Response("unknown host", status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{host}":
            return Response("cross-origin requests are refused", status_code=403)
        if token is not None:
            given = (
                request.query_params.get("token")
                or request.cookies.get(COOKIE)
                or request.headers.get("x-trivy-token")
                or ""
            )
            if not secrets.compare_digest(given.encode(), token.encode()):
                return Response("a token is needed (the one the monitor printed)", status_code=403)
        return None

    async def page(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        response = Response(_asset("index.html"), media_type="text/html")
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["content-security-policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        )
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404)
        return Response(_asset(name), media_type=STATIC[name])

    async def events(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        if len(feed.viewers) >= MAX_VIEWERS:
            return Response(f"{MAX_VIEWERS} pages are open already", status_code=503)
        # Counted at once, before any await: requests that come together
        # cannot all pass the check above. _FeedResponse gives the place back.
        viewer = Viewer()
        feed.viewers.add(viewer)
        try:
            first = feed.snapshot()
        except BaseException:
            feed.viewers.discard(viewer)
            raise

        async def stream() -> AsyncIterator[str]:
            yield f"data: {first}\n\n"
            async for payload in viewer.receive:
                viewer.held -= len(payload)
                yield f"data: {payload}\n\n"

        return _FeedResponse(feed, viewer, stream())

    async def window(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        return JSONResponse(feed.model.window(request.query_params.get("kind", "")))

    async def act(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        action = actions.get(request.path_params["name"])
        if action is None:
            return JSONResponse({"error": "no such action"}, status_code=404)
        size = request.headers.get("content-length", "")
        if not size.isdigit() or int(size) > MAX_BODY:
            return JSONResponse({"error": f"a body of {MAX_BODY} bytes at most"}, status_code=413)
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("a JSON object is expected")
            return JSONResponse(await action(body))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", static),
            Route("/api/events", events),
            Route("/api/window", window),
            Route("/api/{name}", act, methods=["POST"]),
        ]
    )


class _FeedResponse(StreamingResponse):
    """The feed of one page, whose place is given back however it ends: the
    client gone before it started or during it, an error, a cancellation."""

    def __init__(self, feed: Feed, viewer: Viewer, content: AsyncIterator[str]) -> None:
        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.feed, self.viewer = feed, viewer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.feed.viewers.discard(self.viewer)
            self.viewer.send.close()


def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()

"""The monitor's web side: an ASGI app (Starlette), the live feed, the actions.

The feed is server-sent events: one way (the page only listens), plain
HTTP (nothing to upgrade, through any proxy), and the browser reconnects
by itself. What the page does goes as POSTs. Every request is checked:

- *Host* is one of ours (a page of another site cannot reach us through
  a DNS name it rebinds to our address);
- *Origin*, when the browser sends one, is ours, and *Sec-Fetch-Site*,
  when it sends that, says the request comes from our own page or the
  user (another site's page in the same browser cannot drive the bus, nor
  open feeds with an ``<img>``, which sends no Origin);
- the token, when there is one (required off loopback), is given: in the
  address once (``?token=``), then in a cookie (HttpOnly, SameSite=Strict:
  browsers send it to every port of the host name, see the how-to).

An action's body is read within :data:`MAX_BODY` bytes and
:data:`BODY_TIMEOUT` seconds, however it is framed; the plots' windows are
encoded once per change of their kind, by :data:`WINDOW_ENCODERS` requests
at a time.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._feed import Feed, Viewer
from ._json_slices import dumps_in_slices

__all__ = ["MAX_BODY", "MAX_VIEWERS", "build_app"]

COOKIE = "trivy_monitor_token"
#: Pages open at once (each holds up to FEED_BUFFER updates); more are refused.
MAX_VIEWERS = 32
#: Bytes of an action's JSON body; more are refused (413), however framed:
#: a chunked body with a small Content-Length held 1.5 GB and the loop 2.9 s.
MAX_BODY = 64 * 1024
#: Seconds an action's body may take to arrive (408 past it): a POST that
#: never sent its body held its connection for ever (20,000 of them took
#: every descriptor: no page loaded, no agent could join).
BODY_TIMEOUT = 5.0
#: Plot windows encoded at once (30 ms of work each at their bound); the
#: last encoding of WINDOWS_KEPT kinds is kept, as bytes every response
#: shares, until the kind changes (clients that asked for windows and never
#: read held a copy each: 240 KB a connection).
WINDOW_ENCODERS = 2
WINDOWS_KEPT = 64
#: What Sec-Fetch-Site may say: our page, or the user (an address typed).
_OUR_FETCHES = ("same-origin", "none")
STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}


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
        if request.headers.get("sec-fetch-site", "none") not in _OUR_FETCHES:
            return Response("requests of other pages are refused", status_code=403)
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
        # Counted at once, before anything yields: requests that come together
        # cannot all pass the check above. _FeedResponse gives the place back.
        opened = await feed.open_page()
        if opened is None:
            return Response("the pages hold too much already", status_code=503)
        viewer, first = opened
        return _FeedResponse(feed, viewer, feed.stream(viewer, first))

    windows: OrderedDict[str, tuple[object, bytes]] = OrderedDict()  # kind -> (version, JSON)
    encoders = trio.CapacityLimiter(WINDOW_ENCODERS)

    async def window(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        kind = request.query_params.get("kind", "")
        async with encoders:  # (in turn: a second request for it finds it encoded)
            version = feed.model.window_version(kind)
            kept = windows.get(kind)
            if version is None:  # (no such kind: nothing to keep)
                return Response(b"[]", media_type="application/json")
            if kept is None or kept[0] != version:
                window = await dumps_in_slices(feed.model.window(kind))
                kept = windows[kind] = (version, window.text().encode())
                while len(windows) > WINDOWS_KEPT:
                    windows.popitem(last=False)  # (the least lately asked for)
            windows.move_to_end(kind)
        return Response(kept[1], media_type="application/json")

    async def act(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        action = actions.get(request.path_params["name"])
        if action is None:
            return JSONResponse({"error": "no such action"}, status_code=404)
        size = request.headers.get("content-length", "")
        if "transfer-encoding" in request.headers or not size.isdigit() or int(size) > MAX_BODY:
            return JSONResponse({"error": f"a body of {MAX_BODY} bytes at most"}, status_code=413)
        raw = await _body(request)
        if isinstance(raw, Response):
            return raw
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("a JSON object is expected")
            return JSONResponse(await action(body))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=400)

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
            with self.viewer.scope:  # (cancelled: a page that took nothing for long)
                await super().__call__(scope, receive, send)
        finally:
            self.feed.close_page(self.viewer)


async def _body(request: Request) -> bytes | Response:
    """The request's body, or the answer if it is too big or too slow."""
    chunks, size = [], 0
    with trio.move_on_after(BODY_TIMEOUT):
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                return JSONResponse({"error": f"a body of {MAX_BODY} bytes at most"}, 413)
            chunks.append(chunk)
        return b"".join(chunks)
    return JSONResponse({"error": f"the body took over {BODY_TIMEOUT:g} s"}, status_code=408)


def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()

"""``python -m trivy monitor``: see the bus and plot it live, in a browser.

An extra (``pip install "trivy[monitor]"``): Starlette for the app,
Hypercorn's trio worker to serve it, on the bus's own trio loop; uPlot
(vendored, no CDN) draws the plots. The monitor is an agent of the bus
that hears every text; the page shows the agents and their
subscriptions, the traffic by kind with rates, plots of numeric fields,
a tail, and sends texts, direct messages, PINGs and (confirmed) DIEs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import trivy

from . import _feed
from ._agent import follow_bus, hear_everything, make_actions
from ._feed import Feed
from ._grouping import Grouping
from ._hangup import DescriptorReserve, hang_up_pages
from ._model import MAX_FIELDS, BusModel
from ._web import build_app

__all__ = ["Monitor", "MonitorOptions", "run_monitor"]


@attrs.frozen(kw_only=True)
class MonitorOptions:
    """Where the monitor listens, and on which bus.

    Attributes:
      bus: the Ivy bus (as :func:`trivy.open_ivy_bus` takes it).
      host: the address the web server binds: loopback by default; any
        other needs a token (one is made when ``token`` is ``None``).
      port: its TCP port (0: any free one).
      token: what a browser must give (``?token=``) to see or drive the
        bus; ``None`` on loopback means none.
      name: the monitor's agent name on the bus.
      update_interval: seconds between two updates to the pages: the
        page's update rate, whatever the bus's traffic.
      kinds: a regexp that groups texts into kinds by its group ``kind``
        (or its first group) and whose other named groups are the fields
        to plot, by name; texts it does not match go by their first word.
    """

    bus: str | None = None
    host: str = "127.0.0.1"
    port: int = 8100
    token: str | None = attrs.field(default=None, repr=False)
    name: str = "TRIVYMONITOR"
    update_interval: float = 0.25
    kinds: str | None = attrs.field(default=None)

    @kinds.validator
    def _check_kinds(self, _attribute: Any, value: str | None) -> None:
        if value is not None:
            Grouping(value, MAX_FIELDS)  # (raises ValueError, saying why)


@attrs.frozen
class Monitor:
    """A running monitor: the address to open (with its token, if any)."""

    url: str
    bus: trivy.IvyBus
    feed: Feed


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run_monitor(
    options: MonitorOptions, *, task_status: trio.TaskStatus[Monitor] = trio.TASK_STATUS_IGNORED
) -> None:
    """Join the bus and serve the page until cancelled (for ``nursery.start``).

    Raises:
      OSError: the bus cannot be joined, or the address not bound.
    """
    token = options.token
    loopback = _is_loopback(options.host)
    if token is None and not loopback:
        token = secrets.token_urlsafe(24)
    async with trivy.open_ivy_bus(options.name, options.bus) as bus, trio.open_nursery() as nursery:
        texts = hear_everything(bus)
        grouping = None if options.kinds is None else Grouping(options.kinds, MAX_FIELDS)
        feed = Feed(BusModel(grouping))
        with _listening(options.host, options.port) as sock:
            listening = sock.getsockname()
            port = listening[1]
            config = Config()
            config.bind = [f"fd://{os.dup(sock.fileno())}"]  # (Hypercorn owns the copy)
        hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", options.host)}
        actions = make_actions(bus, feed.model)
        app = build_app(feed, actions, allowed_hosts=hosts if loopback else None, token=token)
        config.accesslog = None
        config.errorlog = None
        nursery.start_soon(_hang_up_when_stopped, listening)
        await nursery.start(_serve, app, config)
        nursery.start_soon(follow_bus, bus, texts, feed, options.update_interval)
        host = options.host
        if host in ("0.0.0.0", "::"):  # (every address: this machine's name reaches it)
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
        task_status.started(Monitor(url, bus, feed))


@contextlib.contextmanager
def _listening(host: str, port: int) -> Iterator[socket.socket]:
    """A listening socket on host:port, bound here so that errors are ours to say."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # (Linux; the pages' sockets inherit it)
            # The server writes to a page shielded from cancellation: a page
            # that takes no byte for this long is aborted by the kernel.
            timeout = int(_feed.PAGE_TIMEOUT * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:  # (say which address: the bus's are others)
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        yield sock


async def _serve(app: Any, config: Config, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await serve(app, config, task_status=task_status)


async def _hang_up_when_stopped(listening: tuple[Any, ...]) -> None:
    """When the monitor stops, its pages are hung up on: the server's
    shielded write to a page that reads nothing would hold the exit 30 s."""
    reserve = DescriptorReserve()
    try:
        await trio.sleep_forever()
    finally:
        reserve.release()  # (one descriptor free, whatever a client holds)
        hang_up_pages(listening)

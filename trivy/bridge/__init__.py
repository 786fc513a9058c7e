"""One Ivy bus across sites, through an MQTT broker (``pip install "trivy[mqtt]"``).

Each site runs a bridge on its own bus; every bridge connects to the same
broker. Agents of the other sites appear on each bus as agents of their own
(a proxy each, with their names and regexps), so no program changes: a text
reaches exactly the remote agents whose regexps match it, with the groups
its sender computed, from the sender's name. See :mod:`trivy.bridge._site`
for the topics.

The MQTT client is paho-mqtt, driven from trio through its external-loop
API (:mod:`trivy.bridge._mqtt`).
"""

from __future__ import annotations

import logging
import random
import sys
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TypeVar

import trio

import trivy

from ._mqtt import MqttClient, MqttError, open_mqtt
from ._options import BridgeOptions
from ._own import OwnAgents
from ._site import BridgeConflict, Site

__all__ = ["BridgeConflict", "BridgeOptions", "MqttError", "Site", "run_bridge"]

logger = logging.getLogger("trivy.bridge")

#: The first wait before reconnecting to a lost broker (it doubles after
#: each failed attempt, up to ``reconnect_max``, with jitter).
FIRST_RECONNECT_DELAY = 0.5

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

_E = TypeVar("_E", bound=BaseException)


async def run_bridge(
    options: BridgeOptions, *, task_status: trio.TaskStatus[Site] = trio.TASK_STATUS_IGNORED
) -> None:
    """Bridge ``options.bus`` to the other sites until cancelled.

    For ``nursery.start``: started once connected to the broker, on the
    bus, and mirrored (the other sites' agents known to the broker then
    appear as their proxies join). A lost broker is reconnected to, with
    back-off, for as long as the bridge runs.

    Raises:
      MqttError: the broker cannot be reached at start, or refuses us.
      BridgeConflict: another bridge already bridges this site through
        this broker, or already runs on this bus.
      OSError: the bus cannot be joined.
    """
    try:
        own = OwnAgents()  # (the observer and the proxies: no connection among them)
        async with (
            trivy.open_ivy_bus(
                f"TRIVYBRIDGE-{options.site}", options.bus, refuse_peer=own
            ) as observer,
            trio.open_nursery() as nursery,
        ):
            own.ports.add(observer.port)
            site = Site(options, nursery, own)
            await nursery.start(site.follow_local, observer)
            await _stay_connected(site, task_status)
    except BaseExceptionGroup as group:  # (one clear error for the caller)
        for kind in (BridgeConflict, MqttError):
            if (single := _only(group, kind)) is not None:
                raise single from None
        raise


async def _stay_connected(site: Site, task_status: trio.TaskStatus[Site]) -> None:
    options = site.options
    started = False
    delay = FIRST_RECONNECT_DELAY
    outage: trio.CancelScope | None = None  # while the broker is lost
    async with trio.open_nursery() as nursery:
        while True:
            try:
                async with _connect(site) as mqtt, trio.open_nursery() as connection:
                    await connection.start(partial(site.serve, mqtt, claim=not started))
                    if not started:
                        started = True
                        task_status.started(site)
                    if outage is not None:
                        outage.cancel()
                        outage = None
                        logger.warning("the broker is back: bridging again")
                    delay = FIRST_RECONNECT_DELAY
            except (MqttError, BaseExceptionGroup) as exc:
                lost = _only(exc, MqttError)
                if lost is None:
                    raise
                if not started:
                    raise lost from None
                if outage is None:
                    logger.warning("lost the MQTT broker (%s): reconnecting", lost)
                    outage = trio.CancelScope()
                    nursery.start_soon(_hide_remote_after, site, outage)
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(2 * delay, options.reconnect_max)


def _connect(site: Site) -> AbstractAsyncContextManager[MqttClient]:
    options = site.options
    return open_mqtt(
        options.broker_host,
        options.broker_port,
        client_id=f"trivy-bridge-{options.site}-{site.instance}",
        will=(site.topic("site", options.site), f"offline {site.instance}".encode()),
        keepalive=options.keepalive,
        tls=options.tls,
        ca_file=options.ca_file,
        username=options.username,
        password=options.password,
    )


async def _hide_remote_after(site: Site, outage: trio.CancelScope) -> None:
    """The other sites' agents leave once the broker has been lost 1.5 keepalives
    (by then they see ours gone too); a reconnection before cancels this."""
    with outage:
        await trio.sleep(1.5 * site.options.keepalive)
        site.remote.hide_all()


def _only(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` in ``exc`` if it holds nothing else (groups unwrapped)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found, rest = exc.split(kind)
        if found is not None and rest is None:
            first: BaseException = found
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first if isinstance(first, kind) else None
    return None

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

import trio

import trivy

from ._mqtt import MqttError, open_mqtt
from ._site import BridgeOptions, Site

__all__ = ["BridgeOptions", "MqttError", "run_bridge"]


async def run_bridge(
    options: BridgeOptions, *, task_status: trio.TaskStatus[Site] = trio.TASK_STATUS_IGNORED
) -> None:
    """Bridge ``options.bus`` to the other sites until cancelled.

    For ``nursery.start``: started once connected to the broker and on the
    bus (the other sites' agents then appear as their announces come).

    Raises:
      MqttError: the broker cannot be reached, or is lost.
      OSError: the bus cannot be joined.
    """
    site_topic = f"{options.topic}/site/{options.site}"
    client_id = f"trivy-bridge-{options.topic}-{options.site}"
    async with open_mqtt(
        options.broker_host,
        options.broker_port,
        client_id=client_id,
        will=(site_topic, b"offline"),
        keepalive=options.keepalive,
    ) as mqtt:
        site = Site(options, mqtt)
        name = f"TRIVYBRIDGE-{options.site}"
        async with trivy.open_ivy_bus(name, options.bus) as observer:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(site.serve_remote, nursery)
                    nursery.start_soon(site.publish_local, observer)
                    mqtt.publish(site_topic, "online", retain=True)
                    task_status.started(site)
            finally:
                site.unpublish_all()
                mqtt.publish(site_topic, "offline", retain=True)

"""One site of a bridged bus: its agents published, the other sites' agents proxied.

Each site's bridge runs an *observer* agent on the local bus. It publishes
each local agent (its name and regexps, retained) under the site's topic,
live as they change. For each agent another site publishes, the bridge runs
a *proxy* agent on the local bus, of the same name, subscribed with the
same regexps: a local text that matches reaches the proxy with the groups
its sender computed, and goes to the proxied agent's site, where the proxy
of the sender hands it over as a MSG for the right subscription. So every
agent sees the remote ones as local agents, and the remote receiver sees
the original sender's name. Direct messages cross the same way.

Topics under ``PREFIX`` (``--topic``, ``trivy`` by default):

- ``PREFIX/site/SITE``: ``online``, retained; ``offline`` as the will;
- ``PREFIX/agents/SITE/HOST:PORT``: an agent, JSON, retained (empty: gone);
- ``PREFIX/to/SITE``: texts and direct messages for that site's agents.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

import trivy
from trivy.protocol import MsgType

from ._mqtt import MqttClient, MqttError, MqttMessage

__all__ = ["BridgeOptions", "Site"]

logger = logging.getLogger("trivy.bridge")

#: Largest bridge message read: an agent's regexps (1 Mi characters at most
#: per peer, JSON-escaped) or a text (1 MiB lines) fit; beyond is dropped.
MAX_PAYLOAD = 4 * 1024 * 1024


@attrs.frozen(kw_only=True)
class BridgeOptions:
    """What a bridge needs: its bus, its broker, its site.

    Attributes:
      bus: the local Ivy bus (as :func:`trivy.open_ivy_bus` takes it).
      broker_host, broker_port: the MQTT broker every site uses.
      site: this site's name, unique among the sites (one topic level).
      topic: the topics' prefix; sites of one bridged bus share it.
      max_remote_agents: proxies at most (each is an agent: a socket and
        tasks); agents of other sites beyond are not shown here.
      keepalive: seconds between the client's keepalives: a bridge that
        vanishes (SIGKILL, a cut cable) is declared offline by the broker,
        its agents gone on the other sites, within 1.5 times this.
      allow_die: pass DIEs on, both ways (off: one site must not make
        another's agents leave by accident; a proxy never leaves on one).
    """

    bus: str | None = None
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    site: str = attrs.field()
    topic: str = "trivy"
    max_remote_agents: int = 256
    allow_die: bool = False
    keepalive: int = 10

    @site.validator
    def _check_site(self, attribute: Any, value: str) -> None:
        if not value or any(c in value for c in "/+#\n"):
            raise ValueError(f"a site is a non-empty name without / + # or newline: {value!r}")


def _key(peer: trivy.Peer) -> str:
    return f"{peer.host}:{peer.port}"


@attrs.define(eq=False)
class _Proxy:
    """A remote agent shown on this bus."""

    site: str
    key: str
    name: str
    subscriptions: dict[int, str]
    bus: trivy.IvyBus | None = None
    local_ids: dict[int, int] = attrs.field(factory=dict)  # remote id -> our binding
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class Site:
    """The bridge of one site (see the module's docstring)."""

    def __init__(self, options: BridgeOptions, mqtt: MqttClient) -> None:
        self.options = options
        self._mqtt = mqtt
        self._prefix = options.topic
        self._proxies: dict[tuple[str, str], _Proxy] = {}
        self._proxy_ports: set[int] = set()
        self._published: dict[str, str] = {}  # our agents' keys -> their JSON
        self._nursery: trio.Nursery | None = None
        self._dropped = 0  # messages dropped (over MAX_PAYLOAD, or the broker behind)
        #: Set once the other sites' agents known at start are shown here.
        self.mirrored = trio.Event()

    def topic(self, *parts: str) -> str:
        """A topic under the prefix."""
        return "/".join((self._prefix, *parts))

    # ------------------------------------------------------------ our agents
    async def publish_local(self, observer: trivy.IvyBus) -> None:
        """Publish this site's agents as they come, change and go (a task)."""
        async with observer.events() as events:
            for known in observer.peers:
                self._publish_agent(known)
            changes = (
                trivy.PeerConnected
                | trivy.SubscriptionAdded
                | trivy.SubscriptionChanged
                | trivy.SubscriptionRemoved
            )
            async for event in events:
                peer = getattr(event, "peer", None)
                if not isinstance(peer, trivy.Peer) or peer.port in self._proxy_ports:
                    continue
                if isinstance(event, trivy.PeerDisconnected):
                    self._unpublish(peer)
                elif isinstance(event, changes) and peer in observer.peers:
                    self._publish_agent(peer)

    def _publish_agent(self, peer: trivy.Peer) -> None:
        if peer.port in self._proxy_ports:
            return
        state = json.dumps({"name": peer.name, "subscriptions": dict(peer.subscriptions)})
        key = _key(peer)
        if self._published.get(key) != state:
            self._published[key] = state
            self._mqtt.publish(self.topic("agents", self.options.site, key), state, retain=True)

    def _unpublish(self, peer: trivy.Peer) -> None:
        key = _key(peer)
        if self._published.pop(key, None) is not None:
            self._mqtt.publish(self.topic("agents", self.options.site, key), b"", retain=True)

    def unpublish_all(self) -> None:
        """Leaving: our agents are gone for the other sites."""
        for key in list(self._published):
            self._mqtt.publish(self.topic("agents", self.options.site, key), b"", retain=True)
        self._published.clear()

    # ------------------------------------------------------ the other sites
    async def serve_remote(self, nursery: trio.Nursery) -> None:
        """Follow the other sites' agents and deliver what they send here (a task)."""
        self._nursery = nursery
        mqtt = self._mqtt
        mqtt.subscribe(self.topic("agents", "#"))
        mqtt.subscribe(self.topic("site", "#"))
        mqtt.subscribe(self.topic("to", self.options.site))
        async for message in mqtt:
            if len(message.payload) > MAX_PAYLOAD:  # (anyone with the broker may publish)
                self._dropped += 1
                if self._dropped & (self._dropped - 1) == 0:  # 1, 2, 4...: logs bounded
                    logger.warning(
                        "%d bridge messages over %d bytes dropped", self._dropped, MAX_PAYLOAD
                    )
                continue
            try:
                await self._on_message(message)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("bad bridge message on %s: %s", message.topic, exc)

    async def _on_message(self, message: MqttMessage) -> None:
        parts = message.topic[len(self._prefix) + 1 :].split("/")
        if parts[0] == "agents" and len(parts) == 3 and parts[1] != self.options.site:
            await self._agent_changed(parts[1], parts[2], message.payload)
        elif parts[0] == "site" and len(parts) == 2 and parts[1] != self.options.site:
            if message.payload == b"offline":
                for proxy in [p for p in self._proxies.values() if p.site == parts[1]]:
                    self._drop(proxy)
        elif parts[0] == "to":
            self._deliver(json.loads(message.payload))

    async def _agent_changed(self, site: str, key: str, payload: bytes) -> None:
        proxy = self._proxies.get((site, key))
        if not payload:
            if proxy is not None:
                self._drop(proxy)
            return
        state = json.loads(payload)
        subscriptions = {int(i): str(r) for i, r in state["subscriptions"].items()}
        if proxy is None:
            if len(self._proxies) >= self.options.max_remote_agents:
                logger.warning(
                    "%s of %s not shown: %d remote agents", key, site, len(self._proxies)
                )
                return
            proxy = _Proxy(site, key, str(state["name"]), subscriptions)
            self._proxies[(site, key)] = proxy
            assert self._nursery is not None
            await self._nursery.start(self._run_proxy, proxy)
        else:
            self._resubscribe(proxy, subscriptions)

    def _drop(self, proxy: _Proxy) -> None:
        self._proxies.pop((proxy.site, proxy.key), None)
        proxy.scope.cancel()

    async def _run_proxy(self, proxy: _Proxy, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        with proxy.scope:
            async with trivy.open_ivy_bus(
                proxy.name, self.options.bus, on_die=self._on_die(proxy)
            ) as bus:
                proxy.bus = bus
                self._proxy_ports.add(bus.port)
                try:
                    wanted, proxy.subscriptions = proxy.subscriptions, {}
                    self._resubscribe(proxy, wanted)
                    task_status.started()
                    started = True
                    await self._forward_direct(proxy, bus)
                finally:
                    self._proxy_ports.discard(bus.port)
        if not started:  # (dropped before it was up: nothing to wait for)
            task_status.started()

    def _resubscribe(self, proxy: _Proxy, wanted: dict[int, str]) -> None:
        bus = proxy.bus
        if bus is None:
            proxy.subscriptions = wanted
            return
        for remote_id, regexp in list(proxy.subscriptions.items()):
            if wanted.get(remote_id) != regexp:
                local_id = proxy.local_ids.pop(remote_id, None)
                if local_id is not None:
                    bus.unbind(local_id)
                del proxy.subscriptions[remote_id]
        for remote_id, regexp in wanted.items():
            if remote_id in proxy.subscriptions:
                continue
            try:
                proxy.local_ids[remote_id] = bus.bind(self._forwarder(proxy, remote_id), regexp)
            except ValueError as exc:
                logger.warning("%s's regexp %r cannot be proxied: %s", proxy.name, regexp, exc)
                continue
            proxy.subscriptions[remote_id] = regexp

    def _forwarder(self, proxy: _Proxy, remote_id: int) -> Callable[..., None]:
        def forward(peer: trivy.Peer, *groups: str) -> None:
            if peer.port in self._proxy_ports:
                return  # (another site's agent, already where it belongs)
            self._send_to(proxy, {"kind": "msg", "sub": remote_id, "groups": list(groups)}, peer)

        return forward

    async def _forward_direct(self, proxy: _Proxy, bus: trivy.IvyBus) -> None:
        """Direct messages, ERRORs and (when allowed) DIEs to the proxy, onwards."""
        async with bus.events(overflow="wait") as events:
            async for event in events:
                if isinstance(event, trivy.DirectMessage | trivy.ErrorReceived):
                    if event.peer.port in self._proxy_ports:
                        continue  # (another site's agent)
                    kind = "direct" if isinstance(event, trivy.DirectMessage) else "error"
                    item = {"kind": kind, "num_id": event.num_id, "text": event.text}
                    self._send_to(proxy, item, event.peer)

    def _on_die(self, proxy: _Proxy) -> Callable[[trivy.Peer, int], bool]:
        def on_die(peer: trivy.Peer, num_id: int) -> bool:
            if self.options.allow_die and peer.port not in self._proxy_ports:
                self._send_to(proxy, {"kind": "die", "num_id": num_id, "text": ""}, peer)
            else:
                logger.warning(
                    "%s asked %s of %s to die: not passed on", peer, proxy.name, proxy.site
                )
            return False  # (the proxy stays: its agent leaves if it obeys)

        return on_die

    def _send_to(self, proxy: _Proxy, item: dict[str, Any], sender: trivy.Peer) -> None:
        item.update({"to": proxy.key, "from_site": self.options.site, "from": _key(sender)})
        try:
            self._mqtt.publish(self.topic("to", proxy.site), json.dumps(item))
        except MqttError as exc:  # the broker is behind: dropped, counted, logged boundedly
            self._dropped += 1
            if self._dropped & (self._dropped - 1) == 0:
                logger.warning("%d bridge messages dropped: %s", self._dropped, exc)

    # ------------------------------------------------------------ delivering
    def _deliver(self, item: dict[str, Any]) -> None:
        sender = self._proxies.get((str(item["from_site"]), str(item["from"])))
        if sender is None or sender.bus is None:
            logger.info(
                "a message from %s of %s, not shown here: dropped", item["from"], item["from_site"]
            )
            return
        target = next((p for p in sender.bus.peers if _key(p) == item["to"]), None)
        if target is None:
            logger.info("a message for %s, gone: dropped", item["to"])
            return
        if item["kind"] == "msg":
            groups = [str(g) for g in item["groups"]]
            sender.bus.send_raw(target, MsgType.MSG, int(item["sub"]), groups)
        elif item["kind"] == "direct":
            sender.bus.send_direct(target, int(item["num_id"]), str(item["text"]))
        elif item["kind"] == "error":
            sender.bus.send_error(target, int(item["num_id"]), str(item["text"]))
        elif item["kind"] == "die" and self.options.allow_die:
            sender.bus.send_die(target, int(item["num_id"]))

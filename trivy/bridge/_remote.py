"""The other sites' agents on this bus: one proxy agent each.

A proxy joins the local bus with the remote agent's name and subscribes
with its regexps, so local agents send it what the remote agent wants, with
the groups they computed. What a proxy receives goes, through the
:class:`Outbox`, to the site of the agent it stands for; what arrives for a
local agent is handed over by the proxy of its remote sender, so the
receiver sees the sender's name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

import trivy
from trivy.protocol import MsgType

from ._options import BridgeOptions

__all__ = ["Outbox", "RemoteAgents", "agent_key"]

logger = logging.getLogger("trivy.bridge")

#: The longest a new proxy waits for the local agents to connect to it.
MEETING_LONGEST = 2.0


def agent_key(peer: trivy.Peer) -> str:
    """How the sites name an agent: its host and port (names need not be unique)."""
    return f"{peer.host}:{peer.port}"


class Outbox(Protocol):
    """Where proxies send what they receive: to the site of their agent."""

    def send(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send now, or drop (counted) if the broker is behind or gone."""

    async def send_waiting(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send, waiting while the broker is behind (dropped while it is gone)."""


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
    up: trio.Event = attrs.field(factory=trio.Event)  # joined and met (or failed to)


class RemoteAgents:
    """The proxies of one bridge (they outlive its broker connections)."""

    def __init__(
        self,
        options: BridgeOptions,
        nursery: trio.Nursery,
        outbox: Outbox,
        local_agents: Callable[[], set[str]],
    ) -> None:
        self._options = options
        self._local_agents = local_agents
        self._nursery = nursery
        self._outbox = outbox
        self._proxies: dict[tuple[str, str], _Proxy] = {}
        self._ports: set[int] = set()
        # names of proxies joining: the observer may meet one before its port is known
        self._starting: dict[str, int] = {}

    def is_proxy(self, peer: trivy.Peer) -> bool:
        """Whether ``peer`` is (or may be: one joining by that name) one of our
        proxies, never published back."""
        return peer.port in self._ports or peer.name in self._starting

    def shown(self) -> set[tuple[str, str]]:
        """The (site, key) of every remote agent shown here."""
        return set(self._proxies)

    async def show(self, site: str, key: str, name: str, subscriptions: dict[int, str]) -> None:
        """Show a remote agent here, or follow its new regexps."""
        proxy = self._proxies.get((site, key))
        if proxy is not None:
            self._resubscribe(proxy, subscriptions)
            return
        if len(self._proxies) >= self._options.max_remote_agents:
            logger.warning("%s of %s not shown: %d remote agents", key, site, len(self._proxies))
            return
        proxy = _Proxy(site, key, name, subscriptions)
        self._proxies[(site, key)] = proxy
        self._starting[name] = self._starting.get(name, 0) + 1
        try:
            # (started in the bridge's nursery, not under the caller: a broker
            # connection lost meanwhile must not take a joining proxy with it)
            self._nursery.start_soon(self._run, proxy)
            await proxy.up.wait()
        finally:
            self._starting[name] -= 1
            if not self._starting[name]:
                del self._starting[name]

    def hide(self, site: str, key: str | None = None) -> None:
        """A remote agent gone (``key``), or all of a site's (``None``)."""
        for proxy in list(self._proxies.values()):
            if proxy.site == site and key in (None, proxy.key):
                del self._proxies[(proxy.site, proxy.key)]
                proxy.scope.cancel()

    def hide_all(self) -> None:
        """Every remote agent gone (the broker lost for too long)."""
        for site in {site for site, _ in self._proxies}:
            self.hide(site)

    async def _run(self, proxy: _Proxy) -> None:
        try:
            with proxy.scope:
                async with trivy.open_ivy_bus(
                    proxy.name, self._options.bus, on_die=self._on_die(proxy)
                ) as bus:
                    proxy.bus = bus
                    self._ports.add(bus.port)
                    try:
                        wanted, proxy.subscriptions = proxy.subscriptions, {}
                        self._resubscribe(proxy, wanted)
                        await self._meet_local_agents(bus)
                        proxy.up.set()
                        await self._forward_direct(proxy, bus)
                    finally:
                        self._ports.discard(bus.port)
        finally:
            proxy.up.set()  # (hidden before it was up: nothing to wait for)
            if self._proxies.get((proxy.site, proxy.key)) is proxy:
                del self._proxies[(proxy.site, proxy.key)]  # (gone: shown again if seen)

    async def _meet_local_agents(self, bus: trivy.IvyBus) -> None:
        """Wait until the local agents have connected to a new proxy (bounded).

        What arrives for them from the agent it stands for is then delivered,
        not dropped for want of a connection.
        """
        with trio.move_on_after(MEETING_LONGEST):
            async with bus.events() as events:
                while not self._local_agents() <= {agent_key(p) for p in bus.peers}:
                    await events.receive()

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

    def _forwarder(self, proxy: _Proxy, remote_id: int) -> Callable[..., Awaitable[None]]:
        # (awaited in the task reading the sender: a slow broker slows it)
        async def forward(peer: trivy.Peer, *groups: str) -> None:
            if not self.is_proxy(peer):  # (another site's agent is where it belongs)
                item = {"kind": "msg", "sub": remote_id, "groups": list(groups)}
                await self._outbox.send_waiting(proxy.site, _addressed(item, proxy, peer), peer)

        return forward

    async def _forward_direct(self, proxy: _Proxy, bus: trivy.IvyBus) -> None:
        """Direct messages and ERRORs to the proxy, onwards."""
        async with bus.events(overflow="wait") as events:
            async for event in events:
                if isinstance(event, trivy.DirectMessage | trivy.ErrorReceived):
                    if self.is_proxy(event.peer):
                        continue  # (another site's agent)
                    kind = "direct" if isinstance(event, trivy.DirectMessage) else "error"
                    item = {"kind": kind, "num_id": event.num_id, "text": event.text}
                    addressed = _addressed(item, proxy, event.peer)
                    await self._outbox.send_waiting(proxy.site, addressed, event.peer)

    def _on_die(self, proxy: _Proxy) -> Callable[[trivy.Peer, int], bool]:
        def on_die(peer: trivy.Peer, num_id: int) -> bool:
            if self._options.allow_die and not self.is_proxy(peer):
                item = {"kind": "die", "num_id": num_id, "text": ""}
                self._outbox.send(proxy.site, _addressed(item, proxy, peer), peer)
            else:
                logger.warning(
                    "%s asked %s of %s to die: not passed on", peer, proxy.name, proxy.site
                )
            return False  # (the proxy stays: its agent leaves if it obeys)

        return on_die

    def deliver(self, item: dict[str, Any]) -> None:
        """Hand a message from another site to the local agent it is for."""
        sender = self._proxies.get((str(item["from_site"]), str(item["from"])))
        if sender is None or sender.bus is None:
            logger.info(
                "a message from %s of %s, unknown here: dropped", item["from"], item["from_site"]
            )
            return
        target = next((p for p in sender.bus.peers if agent_key(p) == item["to"]), None)
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
        elif item["kind"] == "die" and self._options.allow_die:
            sender.bus.send_die(target, int(item["num_id"]))


def _addressed(item: dict[str, Any], proxy: _Proxy, sender: trivy.Peer) -> dict[str, Any]:
    item.update({"to": proxy.key, "from": agent_key(sender)})
    return item

"""One site of a bridged bus: its agents published, the other sites' agents shown.

Each site's bridge runs an *observer* agent on the local bus and publishes
each local agent (its name and regexps, retained) under the site's topic,
live as they change; each agent another site publishes is shown here by a
proxy agent (:mod:`trivy.bridge._remote`).

Topics under ``PREFIX`` (``--topic``, ``trivy`` by default):

- ``PREFIX/site/SITE``: ``online INSTANCE``, retained; ``offline
  INSTANCE`` as the will. Each run of a bridge is an *instance*, named by
  its start time, so an older instance's will never takes a newer one
  offline, and the older of two bridges for one site wins;
- ``PREFIX/claim/SITE``: a starting bridge asks whether its site is bridged;
  a running bridge answers by saying its ``online`` again, live;
- ``PREFIX/agents/SITE/HOST:PORT``: an agent, JSON, retained (empty: gone);
- ``PREFIX/to/SITE/FROM``: texts and direct messages for that site's
  agents, from site FROM's;
- ``PREFIX/sync/SITE/INSTANCE``: a marker a bridge sends itself after it
  subscribes: once it comes back, every retained message is in.

On each (re)connection the bridge subscribes, waits for its marker, says
it is online and publishes its agents again (the broker may have restarted
and forgotten them), and clears its site's agents that are no longer here.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import time
from typing import Any

import trio

import trivy

from ._json import TooCostly, loads
from ._limits import LimitedLog, cut
from ._mqtt import MqttClient, MqttError, MqttMessage
from ._options import BridgeOptions
from ._own import OwnAgents
from ._remote import MAX_AGENT_REGEXPS, RemoteAgents, agent_key

__all__ = ["MAX_PAYLOAD", "BridgeConflict", "Site"]

logger = logging.getLogger("trivy.bridge")

#: Largest bridge message read: an agent's regexps (1 Mi characters at most
#: per peer, JSON-escaped) or a text (1 MiB lines) fit; beyond is dropped.
MAX_PAYLOAD = 4 * 1024 * 1024
#: A starting bridge waits until no agent has joined or subscribed on its
#: bus for this long (every agent there has connected to it) ...
SETTLE_QUIET = 0.2
#: ... or this long at most, whatever the bus does.
SETTLE_LONGEST = 2.0
#: Our site's agents retained on the broker remembered at most, to clear those
#: gone (more than the local agents any bus holds; the rest stay retained).
MAX_STALE = 10_000
#: Characters kept of another site's instance (ours are 29), and of a key of
#: our site's retained agents remembered (an agent's is ``host:port``): a
#: site's status of 4 MiB was kept whole, 256 of them 1.3 GB.
MAX_KEPT = 256


def _ignore(*_args: object) -> None:
    """(The observer's marker subscription receives nothing worth reading.)"""


class BridgeConflict(RuntimeError):
    """Another bridge already bridges this site through this broker."""


class Site:
    """The bridge of one site (see the module's docstring)."""

    def __init__(self, options: BridgeOptions, nursery: trio.Nursery, own: OwnAgents) -> None:
        self.options = options
        #: This run's name: its start time first, so that older sorts first.
        self.instance = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        #: What the broker's clients can make this bridge log, rate-limited.
        self.log = LimitedLog(logger)
        self._local: dict[str, str] = {}  # our agents: key -> JSON state
        self.remote = RemoteAgents(options, nursery, self, self._local.keys, self.log, own)
        self._mqtt: MqttClient | None = None
        self._observer: trivy.IvyBus | None = None
        self._live = False  # online on this connection (claim and sync done)
        self._sent: dict[str, str] = {}  # what this connection published of them
        self._sites: dict[str, str] = {}  # other sites online -> their instance
        #: Sites not remembered: ``max_sites`` were.
        self.sites_refused = 0
        self._seen: set[tuple[str, str]] = set()  # shown or pending, seen since connecting
        self._pending: dict[tuple[str, str], tuple[str, dict[int, str]]] = {}  # before live
        self._stale: set[str] = set()  # our site's agents the broker retained
        self._own_status = ""  # our site's retained status, at connection
        self._synced = trio.Event()
        self._dropped = 0  # messages dropped (over MAX_PAYLOAD, or no broker)
        #: Messages refused unparsed: their parse would hold the loop (``_json``).
        self.costly_refused = 0
        #: Connections to the broker that reached bridging (1 once started).
        self.connections = 0
        self._went_live = trio.Event()

    def topic(self, *parts: str) -> str:
        """A topic under the prefix."""
        return "/".join((self.options.topic, *parts))

    # ------------------------------------------------------------ our agents
    async def follow_local(
        self, observer: trivy.IvyBus, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the list of this site's agents as they come, change and go (a task).

        Started once the bus has been quiet a moment (every agent has
        connected to the observer), so that another bridge on this bus is
        seen before this one publishes anything.

        Raises:
          BridgeConflict: another bridge, started before this one, runs on this bus.
        """
        self._observer = observer
        observer.bind(_ignore, f"^TRIVYBRIDGE {self.instance}$")  # (tells other bridges our age)
        async with observer.events() as events:
            for known in observer.peers:
                self._on_local(observer, known)
            settled_by = trio.current_time() + SETTLE_LONGEST
            while trio.current_time() < settled_by:
                with trio.move_on_after(SETTLE_QUIET) as quiet:
                    event = await events.receive()
                if quiet.cancelled_caught:
                    break
                self._on_local(observer, getattr(event, "peer", None))
            task_status.started()
            async for event in events:
                self._on_local(observer, getattr(event, "peer", None))

    def _on_local(self, observer: trivy.IvyBus, peer: object) -> None:
        if not isinstance(peer, trivy.Peer) or self.remote.is_proxy(peer):
            return
        if peer.name.startswith("TRIVYBRIDGE-"):
            for regexp in peer.subscriptions.values():
                found = re.fullmatch(r"\^TRIVYBRIDGE (\S+)\$", regexp)
                if found and found[1] < self.instance:
                    raise BridgeConflict(f"another bridge runs on this bus: {peer}")
            return
        self._local_changed(peer, present=peer in observer.peers)

    def _local_changed(self, peer: trivy.Peer, *, present: bool) -> None:
        key = agent_key(peer)
        if present:
            # (no more than another site takes: a longer message would be refused whole)
            subscriptions = dict(itertools.islice(peer.subscriptions.items(), MAX_AGENT_REGEXPS))
            self._local[key] = json.dumps({"name": peer.name, "subscriptions": subscriptions})
        else:
            self._local.pop(key, None)
        self._publish_agent(key)

    def _publish_agent(self, key: str) -> None:
        state = self._local.get(key, "")
        if self._mqtt is None or not self._live or self._sent.get(key, "") == state:
            return
        self._publish(self.topic("agents", self.options.site, key), state, retain=True)
        if state:
            self._sent[key] = state
        else:
            self._sent.pop(key, None)

    def _say_online(self) -> None:
        """Our status and every agent, again (after a connection, or to correct the broker)."""
        self._publish(self.topic("site", self.options.site), f"online {self.instance}", retain=True)
        self._sent.clear()
        for key in list(self._local):
            self._publish_agent(key)

    def leave(self) -> None:
        """Leaving: our agents are gone for the other sites, and our site is offline."""
        if self._mqtt is None or not self._live:
            return
        for key in list(self._sent):
            self._publish(self.topic("agents", self.options.site, key), "", retain=True)
        site = self.topic("site", self.options.site)
        self._publish(site, f"offline {self.instance}", retain=True)
        self._live = False

    # ------------------------------------------------ one broker connection
    async def serve(
        self, mqtt: MqttClient, *, claim: bool, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bridge over one connection until it is lost; started once synced.

        Raises:
          MqttError: the connection is lost.
          BridgeConflict: another bridge of this site answered (``claim``).
        """
        self._mqtt, self._live, self._synced = mqtt, False, trio.Event()
        self._seen, self._stale, self._own_status, self._pending = set(), set(), "", {}
        site = self.options.site
        marker = self.topic("sync", site, self.instance)
        for topic in ("site/#", f"claim/{site}", "agents/#", f"to/{site}/+"):
            mqtt.subscribe(self.topic(topic))  # (site statuses come first)
        mqtt.subscribe(marker)
        if claim:
            mqtt.publish(self.topic("claim", site), self.instance)
        mqtt.publish(marker, "")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, mqtt)
                await self._synced.wait()
                state, _, other = self._own_status.partition(" ")
                if claim and state == "online" and other != self.instance:
                    # is it alive? it answers within a round trip (_read raises)
                    await trio.sleep(self.options.claim_timeout)
                await self._go_live(nursery)
                task_status.started()
        finally:
            if not mqtt.lost:  # (leaving: publishes what open_mqtt flushes)
                self.leave()
            self._mqtt, self._live = None, False

    async def _go_live(self, nursery: trio.Nursery) -> None:
        self._live = True
        for key in self._stale - set(self._local):  # (left while no bridge ran)
            self._publish(self.topic("agents", self.options.site, key), "", retain=True)
        self._say_online()
        pending, self._pending = self._pending, {}
        for (site, key), (name, subscriptions) in pending.items():
            if site in self._sites:
                self.remote.show(site, key, name, subscriptions)
        # remote agents not (yet) seen again: gone, or their bridge is still
        # reconnecting after a broker restart; they get the keepalive's bound
        nursery.start_soon(self._hide_unseen, 1.5 * self.options.keepalive)
        self.connections += 1
        self._went_live.set()
        self._went_live = trio.Event()

    async def wait_bridging(self, connections: int = 1) -> None:
        """Wait until this many connections to the broker have reached bridging.

        ``wait_bridging(site.connections + 1)`` waits for the next one, after
        a broker is lost and back.
        """
        while self.connections < connections:
            await self._went_live.wait()

    async def _hide_unseen(self, delay: float) -> None:
        await trio.sleep(delay)
        for site, key in self.remote.shown() - self._seen:
            self.remote.hide(site, key)

    async def _read(self, mqtt: MqttClient) -> None:
        async for message in mqtt:
            if len(message.payload) > MAX_PAYLOAD:  # (anyone with the broker may publish)
                self._count_drop(f"bridge messages over {MAX_PAYLOAD} bytes dropped")
                continue
            try:
                await self._on_message(message)
            except TooCostly as exc:
                self.costly_refused += 1
                self.log.warning(
                    "costly", "bridge message on %s refused: %s", cut(message.topic), exc
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.log.warning(
                    "bad message", "bad bridge message on %s: %s", cut(message.topic), cut(exc)
                )
        raise MqttError("the connection to the broker ended")

    async def _on_message(self, message: MqttMessage) -> None:
        parts = message.topic[len(self.options.topic) + 1 :].split("/")
        own = self.options.site
        if parts == ["sync", own, self.instance]:
            _, _, site = message.payload.decode().partition("will ")
            if not site:
                self._synced.set()
            elif site not in self._sites:  # (a will, and the broker is up: it is gone)
                self.remote.hide(site)
        elif parts[0] == "site" and len(parts) == 2:
            status = message.payload.decode()
            if parts[1] == own:
                self._own_site_said(status, live=not message.retain)
            else:
                self._other_site_said(parts[1], status, live=not message.retain)
        elif parts[0] == "claim" and message.payload.decode() != self.instance and self._live:
            self.log.warning("claim", "another bridge for site %r tried to start: refused", own)
            self._say_online()
        elif parts[0] == "agents" and len(parts) == 3:
            if parts[1] == own:
                if message.retain and message.payload:
                    self._stale_said(parts[2])
                elif self._live and parts[2] in self._sent and not message.payload:
                    self._sent.pop(parts[2])  # (cleared by another: ours again)
                    self._publish_agent(parts[2])
            elif parts[1] in self._sites:
                await self._remote_agent_said(parts[1], parts[2], message.payload)
        elif parts[0] == "to" and len(parts) == 3:
            item = loads(message.payload)
            if not isinstance(item, dict):
                raise TypeError("not an object")
            item["from_site"] = parts[2]  # (the topic says it: brokers' ACLs can enforce it)
            self.remote.deliver(item, len(message.payload))

    def _own_site_said(self, status: str, *, live: bool) -> None:
        state, _, instance = status.partition(" ")
        if instance == self.instance:
            return
        if not live:
            self._own_status = status
        elif state == "online" and instance < self.instance:
            raise BridgeConflict(
                f"site {self.options.site!r} is already bridged through this broker"
                f" (a bridge started before this one, instance {instance})"
            )
        elif self._live:  # a younger one, or an old one's will: we are the site
            self._say_online()

    def _stale_said(self, key: str) -> None:
        if len(self._stale) < MAX_STALE and len(key) <= MAX_KEPT:
            self._stale.add(key)
        else:
            self.log.warning("stale", "our agent %s retained: not remembered", cut(key))

    def _other_site_said(self, site: str, status: str, *, live: bool) -> None:
        state, _, instance = status[: MAX_KEPT + 16].partition(" ")
        if state == "online":
            if site not in self._sites and len(self._sites) >= self.options.max_sites:
                self.sites_refused += 1
                self.log.warning(
                    "sites", "site %s ignored: %d sites known", cut(site), len(self._sites)
                )
                return
            self._sites[site] = instance
        elif state == "offline" and self._sites.get(site, instance) == instance:
            self._sites.pop(site, None)
            if live and self._mqtt is not None:
                # A will, live: but a broker shutting down publishes the will of
                # every client it drops, and we may be next. Its agents leave
                # once a marker we send ourselves comes back: the broker is up.
                self._publish(self.topic("sync", self.options.site, self.instance), f"will {site}")
            else:
                self.remote.hide(site)

    def proxy_joined(self, name: str) -> None:
        """A proxy is up: a local agent of its name that joined meanwhile was
        taken for it; it is published now."""
        if self._observer is not None:
            for peer in self._observer.peers:
                if peer.name == name and not self.remote.is_proxy(peer):
                    self._local_changed(peer, present=True)

    async def _remote_agent_said(self, site: str, key: str, payload: bytes) -> None:
        if not payload:
            self._pending.pop((site, key), None)
            self.remote.hide(site, key)
            return
        state = loads(payload)
        name = str(state["name"])
        trivy.BusOptions(agent_name=name, bus=self.options.bus)  # (ValueError: no agent's name)
        subscriptions = self.remote.capped(site, key, state["subscriptions"])
        if self._live:
            self.remote.show(site, key, name, subscriptions)
            if self.remote.is_shown(site, key):  # (bounded as the proxies are)
                self._seen.add((site, key))
        elif (site, key) in self._pending or len(self._pending) < self.options.max_remote_agents:
            # (shown once live: a bridge that turns out to be a duplicate shows nothing)
            self._pending[(site, key)] = (name, subscriptions)
            self._seen.add((site, key))

    # ----------------------------------------------------- the outbox
    def send(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send a message to a site's agents now, or drop it (counted)."""
        key = agent_key(sender)
        if self._live and key not in self._sent:
            # (its text reached a proxy before its arrival reached the observer:
            # the other sites learn of the sender first, so they know it)
            self._local_changed(sender, present=True)
        self._publish(self.topic("to", site, self.options.site), json.dumps(item))

    async def send_waiting(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send, first waiting while the broker is behind."""
        if self._mqtt is not None:
            await self._mqtt.wait_room()
        self.send(site, item, sender)

    def _publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        if self._mqtt is None:
            self._count_drop("bridge messages dropped: no broker")
            return
        try:
            self._mqtt.publish(topic, payload, retain=retain)
        except MqttError as exc:  # the broker is behind: dropped, counted, logged boundedly
            self._count_drop(f"bridge messages dropped: {exc}")

    def _count_drop(self, why: str) -> None:
        self._dropped += 1
        if self._dropped & (self._dropped - 1) == 0:  # 1, 2, 4...: logs bounded
            logger.warning("%d %s", self._dropped, why)

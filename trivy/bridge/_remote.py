"""The other sites' agents on this bus: one proxy agent each.

A proxy joins the local bus with the remote agent's name and subscribes
with its regexps, so local agents send it what the remote agent wants, with
the groups they computed. What a proxy receives goes, through the
:class:`Outbox`, to the site of the agent it stands for; what arrives for a
local agent is handed over by the proxy of its remote sender, so the
receiver sees the sender's name.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from time import perf_counter
from typing import Any, Protocol

import attrs
import trio

import trivy

from ._agent_state import MAX_AGENT_REGEXPS, agent_key, crowding, within_caps
from ._delivery import hand_over
from ._limits import LimitedLog, cut
from ._options import BridgeOptions
from ._own import OwnAgents
from ._turns import WORK_SLICE, TakingTurns

__all__ = ["MAX_AGENT_REGEXPS", "Outbox", "RemoteAgents", "agent_key"]

#: The longest a new proxy waits for the local agents to connect to it.
MEETING_LONGEST = 2.0
#: Bytes of messages from other sites that may wait for their sender's proxy
#: to be up (each counted with 1 KiB more, for its objects); past it they
#: are dropped (logged).
MAX_WAITING_BYTES = 16 * 1024 * 1024
#: Seconds a local agent that did not meet a proxy in time is not waited
#: for by the next ones (unless it meets one): a frozen agent made each new
#: proxy wait the 2 s, and the bridge read nothing meanwhile (20 remote
#: agents: 38 s).
LATE_EXCUSED = 60.0


class Outbox(Protocol):
    """Where proxies send what they receive: to the site of their agent."""

    def send(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send now, or drop (counted) if the broker is behind or gone."""

    async def send_waiting(self, site: str, item: dict[str, Any], sender: trivy.Peer) -> None:
        """Send, waiting while the broker is behind (dropped while it is gone)."""

    def proxy_joined(self, name: str) -> None:
        """A proxy named ``name`` is up: local agents of that name are no longer
        taken for it (see :meth:`RemoteAgents.is_proxy`)."""


@attrs.define(eq=False)
class _Proxy:
    """A remote agent shown on this bus."""

    site: str
    key: str
    name: str
    wanted: dict[int, str]  # the regexps its latest message gives (never mutated)
    bus: trivy.IvyBus | None = None
    applied: dict[int, str] | None = None  # the ``wanted`` last proxied in full
    changed: trio.Event = attrs.field(factory=trio.Event)  # ``wanted`` replaced
    subscriptions: dict[int, str] = attrs.field(factory=dict)  # bound now
    local_ids: dict[int, int] = attrs.field(factory=dict)  # remote id -> our binding
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    up: trio.Event = attrs.field(factory=trio.Event)  # joined and met (or failed to)
    waiting: deque[tuple[dict[str, Any], int]] = attrs.field(factory=deque)  # for once up


class RemoteAgents:
    """The proxies of one bridge (they outlive its broker connections)."""

    def __init__(
        self,
        options: BridgeOptions,
        nursery: trio.Nursery,
        outbox: Outbox,
        local_agents: Callable[[], AbstractSet[str]],
        log: LimitedLog,
        own: OwnAgents,
    ) -> None:
        self._options = options
        self._log = log
        #: Regexps of remote agents refused (over the caps, or not compiling).
        self.refused_regexps = 0
        #: Remote agents not shown: ``max_remote_agents`` were.
        self.not_shown = 0
        #: Regexps of remote agents bound here (proxied), all told.
        self.bound = 0
        self._local_agents = local_agents
        self._late: dict[str, float] = {}  # local agents that did not meet a proxy: when
        self._nursery = nursery
        self._outbox = outbox
        self._proxies: dict[tuple[str, str], _Proxy] = {}
        self._own = own  # (the proxies' ports among them)
        # names of proxies joining: the observer may meet one before its port is known
        self._starting: dict[str, int] = {}
        self._binding = trio.Lock()  # (held by the proxy binding: one slice a pass in all)
        self._waiting_bytes = 0  # (of the messages waiting for their proxies to be up)

    def is_proxy(self, peer: trivy.Peer) -> bool:
        """Whether ``peer`` is (or may be: one joining by that name) one of our
        proxies, never published back. (What reaches a proxy is forwarded
        unless its sender is one of ours by address: a local agent named as
        a joining proxy was taken for it, its texts dropped, up to 2 s.)"""
        return self._own(peer.host, peer.port) or peer.name in self._starting

    def shown(self) -> set[tuple[str, str]]:
        """The (site, key) of every remote agent shown here."""
        return set(self._proxies)

    def is_shown(self, site: str, key: str) -> bool:
        """Whether that remote agent is shown here (or joining)."""
        return (site, key) in self._proxies

    def capped(self, site: str, key: str, regexps: Mapping[str, object]) -> dict[int, str]:
        """A remote agent's regexps (JSON: id -> regexp) within the caps.

        Those past :data:`MAX_AGENT_REGEXPS`, or past
        :data:`MAX_AGENT_REGEXP_CHARS` in all, are refused (counted, logged).

        Raises:
          ValueError: an id is not a number.
        """
        taken, refused = within_caps(regexps)
        if refused:
            self.refused_regexps += refused
            self._log.warning(
                "regexps",
                "%d regexps of %s of %s refused: over an agent's %d, or 1 Mi characters",
                refused, cut(key), cut(site), MAX_AGENT_REGEXPS,
            )  # fmt: skip
        return taken

    def show(self, site: str, key: str, name: str, subscriptions: dict[int, str]) -> None:
        """Show a remote agent here, or follow its new regexps (by its proxy's
        task: a newer message supersedes one still being applied).

        A new proxy joins in a task of its own: its regexps bound (so the local
        agents find them in its handshake), then the local agents met (bounded:
        :data:`MEETING_LONGEST`). What its agent sends meanwhile waits for it
        (:data:`MAX_WAITING_BYTES`). The bridge went on reading only once it
        was up: an agent of 10,000 regexps held it 1.3 s, 30 of them 40 s.
        """
        proxy = self._proxies.get((site, key))
        if proxy is not None:
            proxy.wanted = subscriptions
            proxy.changed.set()
            return
        if len(self._proxies) >= self._options.max_remote_agents:
            crowded = crowding(self._proxies, site)  # (no site crowds the others out)
            self.not_shown += 1
            self._log.warning(
                "not shown",
                "%s of %s not shown: %d remote agents",
                *map(cut, (crowded or (site, key))[::-1]), len(self._proxies),
            )  # fmt: skip
            if crowded is None:
                return
            self.hide(*crowded)
        proxy = _Proxy(site, key, name, subscriptions)
        self._proxies[(site, key)] = proxy
        self._starting[name] = self._starting.get(name, 0) + 1
        # (in the bridge's nursery, not the caller's: a broker connection lost
        # meanwhile must not take a joining proxy with it)
        self._nursery.start_soon(self._run, proxy)

    def _joined(self, proxy: _Proxy, *, met: bool) -> None:
        """The proxy is up (``met``: what waited for it is delivered next), or
        failed or was hidden (what waited for it is dropped)."""
        if not met:
            self._waiting_bytes -= sum(size for _, size in proxy.waiting)
            proxy.waiting.clear()
        if proxy.up.is_set():
            return
        proxy.up.set()
        self._starting[proxy.name] -= 1
        if not self._starting[proxy.name]:
            del self._starting[proxy.name]
        self._outbox.proxy_joined(proxy.name)  # (met or not: no longer taken for a proxy)

    def hide(self, site: str, key: str | None = None) -> None:
        """A remote agent gone (``key``), or all of a site's (``None``)."""
        for proxy in list(self._proxies.values()):
            if proxy.site == site and key in (None, proxy.key):
                del self._proxies[(proxy.site, proxy.key)]
                proxy.scope.cancel()
                self._joined(proxy, met=False)  # (at once, not once its bus has left)

    def hide_all(self) -> None:
        """Every remote agent gone (the broker lost for too long)."""
        for site in {site for site, _ in self._proxies}:
            self.hide(site)

    async def _run(self, proxy: _Proxy) -> None:
        try:
            with proxy.scope:
                async with trivy.open_ivy_bus(
                    proxy.name, self._options.bus, on_die=self._on_die(proxy), refuse_peer=self._own
                ) as bus:
                    proxy.bus = bus
                    self._own.ports.add(bus.port)
                    try:
                        # (the regexps of the state it was shown with, whatever
                        # comes meanwhile: a newer one every 0.25 s kept it joining)
                        await self._resubscribe(proxy, bus, settle=False)
                        await self._meet_local_agents(bus)
                        self._joined(proxy, met=True)
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._follow_regexps, proxy, bus)
                            # (the answers to what waited are forwarded: the stream
                            # is open before the first is delivered)
                            async with bus.events(overflow="wait") as events:
                                nursery.start_soon(self._deliver_waiting, proxy)
                                await self._forward_direct(proxy, events)
                            nursery.cancel_scope.cancel()  # (the bus ended: so does following)
                    finally:
                        self._own.ports.discard(bus.port)
        except Exception as exc:  # (one remote agent never takes the bridge down)
            self._log.warning(
                "proxy failed",
                "%s of %s not shown: %s",
                cut(proxy.key), cut(proxy.site), cut(exc),
            )  # fmt: skip
        finally:
            self._joined(proxy, met=False)  # (hidden before it was up: nothing waits)
            if self._proxies.get((proxy.site, proxy.key)) is proxy:
                del self._proxies[(proxy.site, proxy.key)]  # (gone: shown again if seen)

    async def _meet_local_agents(self, bus: trivy.IvyBus) -> None:
        """Wait until the local agents have connected to a new proxy (bounded).

        What arrives for them from the agent it stands for is then delivered,
        not dropped for want of a connection.
        """
        now = trio.current_time()
        self._late = {key: at for key, at in self._late.items() if now - at < LATE_EXCUSED}
        with trio.move_on_after(MEETING_LONGEST) as waiting:
            async with bus.events() as events:
                while not self._local_agents() - set(self._late) <= _keys(bus):
                    await events.receive()
        met = _keys(bus)
        for key in set(self._late) & met:  # (it meets proxies again)
            del self._late[key]
        if waiting.cancelled_caught:
            for key in self._local_agents() - met:
                self._late[key] = trio.current_time()

    async def _follow_regexps(self, proxy: _Proxy, bus: trivy.IvyBus) -> None:
        while True:
            await proxy.changed.wait()
            proxy.changed = trio.Event()
            await self._resubscribe(proxy, bus)

    async def _resubscribe(self, proxy: _Proxy, bus: trivy.IvyBus, settle: bool = True) -> None:
        """Bind what ``proxy.wanted`` says, unbind the rest, in turns with the
        other proxies (see ``_turns``), starting over from a newer ``wanted``
        (unless not ``settle``: then the one in place when it started, whole)."""
        if proxy.applied is proxy.wanted:
            return
        slices = TakingTurns(self._binding)
        await slices.start()
        try:
            while proxy.applied is not proxy.wanted:
                target = proxy.wanted
                if await self._apply(proxy, bus, target, slices, settle):
                    proxy.applied = target
                if not settle:
                    break
        finally:
            slices.end()

    async def _apply(
        self,
        proxy: _Proxy,
        bus: trivy.IvyBus,
        target: dict[int, str],
        slices: TakingTurns,
        supersede: bool = True,
    ) -> bool:
        """Apply ``target``; False if a newer one came meanwhile (and ``supersede``)."""
        for remote_id, regexp in list(proxy.subscriptions.items()):
            if await slices.next() and supersede and proxy.wanted is not target:
                return False
            if target.get(remote_id) != regexp:
                local_id = proxy.local_ids.pop(remote_id, None)
                if local_id is not None:
                    bus.unbind(local_id)
                del proxy.subscriptions[remote_id]
        for remote_id, regexp in target.items():  # (``target`` is never mutated)
            if await slices.next() and supersede and proxy.wanted is not target:
                return False
            if remote_id in proxy.subscriptions:
                continue
            try:
                proxy.local_ids[remote_id] = bus.bind(self._forwarder(proxy, remote_id), regexp)
            except ValueError as exc:
                self.refused_regexps += 1
                self._log.warning(
                    "bad regexp",
                    "%s's regexp %r cannot be proxied: %s",
                    cut(proxy.name), cut(regexp), cut(exc),
                )  # fmt: skip
                continue
            proxy.subscriptions[remote_id] = regexp
            self.bound += 1
        return True

    def _forwarder(self, proxy: _Proxy, remote_id: int) -> Callable[..., Awaitable[None]]:
        # (awaited in the task reading the sender: a slow broker slows it)
        async def forward(peer: trivy.Peer, *groups: str) -> None:
            if not self._own(peer.host, peer.port):  # (another site's agent is where it belongs)
                item = {"kind": "msg", "sub": remote_id, "groups": list(groups)}
                await self._outbox.send_waiting(proxy.site, _addressed(item, proxy, peer), peer)

        return forward

    async def _forward_direct(
        self, proxy: _Proxy, events: trivy.EventStream[trivy.BusEvent]
    ) -> None:
        """Direct messages and ERRORs to the proxy (its bus's ``events``), onwards."""
        async for event in events:
            if isinstance(event, trivy.DirectMessage | trivy.ErrorReceived):
                if self._own(event.peer.host, event.peer.port):
                    continue  # (another site's agent)
                kind = "direct" if isinstance(event, trivy.DirectMessage) else "error"
                item = {"kind": kind, "num_id": event.num_id, "text": event.text}
                addressed = _addressed(item, proxy, event.peer)
                await self._outbox.send_waiting(proxy.site, addressed, event.peer)

    def _on_die(self, proxy: _Proxy) -> Callable[[trivy.Peer, int], bool]:
        def on_die(peer: trivy.Peer, num_id: int) -> bool:
            if self._options.allow_die and not self._own(peer.host, peer.port):
                item = {"kind": "die", "num_id": num_id, "text": ""}
                self._outbox.send(proxy.site, _addressed(item, proxy, peer), peer)
            else:
                self._log.warning(
                    "die",
                    "%s asked %s of %s to die: not passed on",
                    peer, cut(proxy.name), cut(proxy.site),
                )  # fmt: skip
            return False  # (the proxy stays: its agent leaves if it obeys)

        return on_die

    def deliver(self, item: dict[str, Any], size: int) -> None:
        """Hand a message from another site (``size`` bytes) to the local agent it
        is for; it waits for its sender's proxy if that is not up yet.

        Raises:
          ValueError, KeyError, TypeError: a malformed message.
        """
        sender = self._proxies.get((str(item["from_site"]), str(item["from"])))
        if sender is not None and (not sender.up.is_set() or sender.waiting):
            if self._waiting_bytes + size + 1024 > MAX_WAITING_BYTES:  # (1 KiB: its objects)
                self._log.warning("waiting", "messages for joining proxies over the bound: dropped")
            else:
                sender.waiting.append((item, size + 1024))
                self._waiting_bytes += size + 1024
            return
        self._hand_over(sender, item)

    def _hand_over(self, sender: _Proxy | None, item: dict[str, Any]) -> None:
        bus = None if sender is None else sender.bus
        hand_over(bus, item, allow_die=self._options.allow_die, log=self._log)

    async def _deliver_waiting(self, proxy: _Proxy) -> None:
        """What waited for the proxy, in order (more may come meanwhile), in
        slices: 16 MiB of small messages made thousands of sends."""
        turn = perf_counter()
        while proxy.waiting:
            item, size = proxy.waiting.popleft()
            self._waiting_bytes -= size
            try:
                self._hand_over(proxy, item)
            except (ValueError, KeyError, TypeError) as exc:
                self._log.warning("bad message", "bad bridge message: %s", cut(exc))
            if perf_counter() - turn > WORK_SLICE:
                await trio.lowlevel.checkpoint()
                turn = perf_counter()


def _keys(bus: trivy.IvyBus) -> set[str]:
    return {agent_key(peer) for peer in bus.peers}


def _addressed(item: dict[str, Any], proxy: _Proxy, sender: trivy.Peer) -> dict[str, Any]:
    item.update({"to": proxy.key, "from": agent_key(sender)})
    return item

"""The monitor's bus side: an agent that hears every text and every change.

It subscribes to every text (``^(.*)$``, as a recorder does: each agent
then sends it everything it sends), follows the bus's events, and feeds
the :class:`~trivy.monitor._model.BusModel`; a ticker hands what changed
to the open pages a few times a second, whatever the traffic.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import trio

import trivy

from ._feed import Feed
from ._model import BusModel
from ._web import Action

__all__ = ["TICK", "follow_bus", "hear_everything", "make_actions", "peer_key"]

#: Seconds between two updates to the pages.
TICK = 0.25
#: Texts taken from the subscription at once (then the loop yields).
BATCH = 256
#: Seconds of work on texts before the loop yields to the others.
SLICE = 0.005
#: Seconds a PING from the page may take.
PING_TIMEOUT = 5.0


def peer_key(peer: trivy.Peer) -> str:
    """How the page names an agent: host and port (names need not be unique)."""
    return f"{peer.host}:{peer.port}"


def hear_everything(bus: trivy.IvyBus) -> trivy.Subscription:
    """Subscribe to every text; call it at once after joining, so that the
    subscription is in the handshake and the agents' ready messages reach us."""
    return bus.subscribe("^(.*)$")


async def follow_bus(
    bus: trivy.IvyBus, texts: trivy.Subscription, feed: Feed, interval: float = TICK
) -> None:
    """Feed the model from the bus, and the pages from the model (tasks; until cancelled)."""
    model = feed.model
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_follow_texts, texts, model)
        nursery.start_soon(_follow_events, bus, model)
        while True:
            await trio.sleep(interval)
            update = model.changes(trio.current_time())
            if update is not None:
                await feed.publish(update)


async def _follow_texts(texts: trivy.Subscription, model: BusModel) -> None:
    async with texts:
        while True:
            batch = await texts.receive_batch(BATCH)
            now = trio.current_time()
            started = perf_counter()
            for match in batch:
                model.text(now, match.peer.name, match.groups[0], peer_key(match.peer))
                if perf_counter() - started > SLICE:  # (a slow --kinds regexp: fair by time)
                    await trio.lowlevel.checkpoint()
                    started = perf_counter()


async def _follow_events(bus: trivy.IvyBus, model: BusModel) -> None:
    async with bus.events() as events:
        for known in bus.peers:
            _seen(model, known)
        async for event in events:
            peer = getattr(event, "peer", None)
            if not isinstance(peer, trivy.Peer):
                continue
            if isinstance(event, trivy.PeerDisconnected):
                model.agent_gone(peer_key(peer))
                model.event(f"{peer.name} left")
            elif isinstance(event, trivy.ErrorReceived):
                model.agent_note(peer_key(peer), error=event.text)
            elif isinstance(event, trivy.Congestion):
                model.agent_note(peer_key(peer), congested=True)
            elif peer in bus.peers:
                if isinstance(event, trivy.PeerConnected):
                    model.event(f"{peer.name} joined from {peer.host}")
                _seen(model, peer)


def _seen(model: BusModel, peer: trivy.Peer) -> None:
    model.agent_seen(trio.current_time(), peer_key(peer), peer.name, peer.host, peer.subscriptions)


def make_actions(bus: trivy.IvyBus, model: BusModel) -> dict[str, Action]:
    """What a page may do: send a text, a direct message, a PING, a DIE (confirmed)."""

    def agent(body: dict[str, Any]) -> trivy.Peer:
        key = str(body["agent"])
        found = next((p for p in bus.peers if peer_key(p) == key), None)
        if found is None:
            raise ValueError(f"no agent {key} on the bus")
        return found

    def one_line(body: dict[str, Any]) -> str:
        text = str(body["text"])
        if "\n" in text or "\r" in text:
            raise ValueError("a text is one line")
        return text

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        text = one_line(body)
        count = await bus.send(text)
        model.text(trio.current_time(), f"{bus.agent_name} (this page)", text)
        return {"sent_to": count}

    async def direct(body: dict[str, Any]) -> dict[str, Any]:
        bus.send_direct(agent(body), int(body.get("num_id", 0)), one_line(body))
        return {"sent": True}

    async def ping(body: dict[str, Any]) -> dict[str, Any]:
        peer = agent(body)
        with trio.move_on_after(PING_TIMEOUT):
            return {"round_trip_ms": round(await bus.ping(peer) * 1000, 3)}
        return {"error": f"no PONG from {peer.name} within {PING_TIMEOUT:g} s"}

    async def die(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("confirm") is not True:
            raise ValueError("DIE makes an agent leave: confirm it")
        peer = agent(body)
        bus.send_die(peer)
        model.event(f"DIE sent to {peer.name} from the page")
        return {"sent": True}

    return {"send": send, "direct": direct, "ping": ping, "die": die}

"""The one-shot commands: ``send``, ``who``, ``ping`` and ``die``.

Each joins the bus, does one thing and leaves; each returns its exit code
(see :mod:`trivy._cli_common`). Waits are bounded by the ``--timeout``
option, through trio cancel scopes.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._bus import IvyBus
from ._cli_common import EXIT_FAILED, EXIT_OK, UsageError, bus_options, err, join, out
from ._event_streams import EventStream
from ._events import BusEvent
from ._probe_commands import peers_count

__all__ = ["run_die", "run_ping", "run_send", "run_who"]


#: Seconds without an agent joining or subscribing before ``ping`` and
#: ``die`` act: the agents of one name connect one after another.
SETTLE = 0.2


@asynccontextmanager
async def _joined_with(args: argparse.Namespace) -> AsyncIterator[IvyBus | None]:
    """Join, wait for agent ``args.agent`` and for the bus to settle (every
    agent of that name connected): the bus, or None if it did not come."""
    async with join(bus_options(args.name, args.bus)) as bus, bus.events() as events:
        with trio.move_on_after(args.timeout) as waiting:
            await bus.wait_for_peer(args.agent)
        if waiting.cancelled_caught:
            yield None
            return
        await _settle(events, SETTLE, args.timeout)
        yield bus


def _not_found(name: str | None, seconds: float) -> int:
    """Report that no agent (named ``name``) came within ``seconds``."""
    who = "agent" if name is None else f"agent {name!r}"
    err(f"no {who} within {seconds:g} s")
    return EXIT_FAILED


async def run_send(args: argparse.Namespace) -> int:
    """``trivy send``: wait for an agent, send each text, print the count."""
    options = bus_options(args.name, args.bus)
    for text in args.texts:
        if "\n" in text:
            raise UsageError(f"bad TEXT {text!r}: contains a newline")
    async with join(options) as bus, bus.events() as events:
        with trio.move_on_after(args.timeout) as waiting:
            await bus.wait_for_peer(args.wait_for)
        if waiting.cancelled_caught:
            return _not_found(args.wait_for, args.timeout)
        await _settle(events, args.settle, args.timeout)
        total = 0
        for text in args.texts:  # (a line per text, as the probe says it)
            count = await bus.send(text)
            out(f"-> Sent to {peers_count(count)}")
            total += count
    return EXIT_OK if total else EXIT_FAILED


async def _settle(events: EventStream[BusEvent], quiet: float, longest: float) -> None:
    """Wait until the bus has been quiet (no agent joining or subscribing) for ``quiet`` s.

    Every agent on the bus connects to a newcomer when it hears its
    announce: the first one to complete its handshake is not the last, and
    a text sent at once would miss a recorder still connecting. ``longest``
    bounds the wait, whatever the bus does.
    """
    with trio.move_on_after(longest):
        while quiet > 0:
            with trio.move_on_after(quiet) as silence:
                await events.receive()
            if silence.cancelled_caught:
                return


async def run_who(args: argparse.Namespace) -> int:
    """``trivy who``: listen ``--timeout`` seconds, list agents and subscriptions."""
    options = bus_options(args.name, args.bus)
    async with join(options) as bus:
        await trio.sleep(args.timeout)
        peers = bus.peers
        for peer in peers:
            out(f"{peer.name} {peer.host}:{peer.port}")
            for sub_id, regexp in sorted(peer.subscriptions.items()):
                out(f"  id={sub_id} '{regexp}'")
    if not peers:
        err(f"no agent within {args.timeout:g} s")
        return EXIT_FAILED
    return EXIT_OK


async def run_ping(args: argparse.Namespace) -> int:
    """``trivy ping NAME``: print the round trip to each agent named NAME."""
    async with _joined_with(args) as bus:
        if bus is None:
            return _not_found(args.agent, args.timeout)
        status = EXIT_OK
        for peer in bus.peers_named(args.agent):
            try:
                with trio.fail_after(args.timeout):
                    seconds = await bus.ping(peer)
            except trio.TooSlowError:
                err(f"{peer.name}: no answer within {args.timeout:g} s")
                status = EXIT_FAILED
                continue
            except Exception as exc:  # it left meanwhile
                err(f"{peer.name}: {exc}")
                status = EXIT_FAILED
                continue
            out(f"{peer.name} round trip {seconds * 1000:.3f} ms")
    return status


async def run_die(args: argparse.Namespace) -> int:
    """``trivy die NAME``: ask every agent named NAME to leave the bus."""
    async with _joined_with(args) as bus:
        if bus is None:
            return _not_found(args.agent, args.timeout)
        for peer in bus.peers_named(args.agent):
            bus.send_die(peer)
            out(f"-> Asked {peer.name} to die")
    return EXIT_OK

"""Request and reply over direct messages: ``bus.requests``.

trivy to trivy in one ``trio.run``, and against a real ivy-python peer
(which answers with its own ``send_direct_message``, as any Ivy program can).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

import trivy
from trivy._requests import MAX_ABANDONED

from .test_interop_ivy_python import ivy_python_peer, meet, trivy_bus

TIMEOUT = 10


def add(peer: trivy.Peer, text: str) -> str:
    left, right = text.split("+")
    return str(int(left) + int(right))


async def test_a_request_gets_its_answer_by_name_or_peer(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("CALC", bus) as calc,
            trivy.open_ivy_bus("CLIENT", bus) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(calc.requests.serve, add)
            peer = await client.wait_for_peer("CALC")
            assert await client.requests.ask("CALC", "2+3") == "5"
            assert await client.requests.ask(peer, "40+2") == "42"
            # a failing handler is an ERROR to the asker, and serving goes on
            with pytest.raises(trivy.RequestFailed, match="ValueError") as failed:
                await client.requests.ask(peer, "two+three")
            assert failed.value.peer is peer
            assert await client.requests.ask(peer, "1+1") == "2"
            nursery.cancel_scope.cancel()


def answering_as(port: int) -> Callable[[trivy.Peer, str], Awaitable[str]]:
    async def handler(peer: trivy.Peer, text: str) -> str:
        await trio.lowlevel.checkpoint()  # a coroutine function: awaited
        return f"{text} from {port}"

    return handler


async def test_an_async_handler_and_two_agents_of_one_name(bus: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("SAME", bus) as one,
            trivy.open_ivy_bus("SAME", bus) as two,
            trivy.open_ivy_bus("CLIENT", bus) as client,
            trio.open_nursery() as nursery,
        ):
            for agent in (one, two):
                nursery.start_soon(agent.requests.serve, answering_as(agent.port))
            async with client.events() as events:
                while len(client.peers_named("SAME")) < 2:
                    await events.receive()
            with pytest.raises(ValueError, match="2 agents are named 'SAME'"):
                await client.requests.ask("SAME", "hi")
            answers = {await client.requests.ask(p, "hi") for p in client.peers_named("SAME")}
            assert answers == {f"hi from {one.port}", f"hi from {two.port}"}
            with pytest.raises(trivy.IvyIllegalStateError, match="no agent named 'NOBODY'"):
                await client.requests.ask("NOBODY", "hi")
            nursery.cancel_scope.cancel()


async def test_a_peer_leaving_mid_request_fails_it_at_once(bus: str) -> None:
    asked = trio.Event()

    async def never(peer: trivy.Peer, text: str) -> str:
        asked.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(TIMEOUT):
        async with trivy.open_ivy_bus("CLIENT", bus) as client, trio.open_nursery() as nursery:
            async with trivy.open_ivy_bus("SLOW", bus) as slow:
                nursery.start_soon(slow.requests.serve, never)
                peer = await client.wait_for_peer("SLOW")

                async def leave_once_asked() -> None:
                    await asked.wait()
                    slow.stop()

                nursery.start_soon(leave_once_asked)
                with pytest.raises(trivy.RequestFailed, match="left before answering"):
                    await client.requests.ask(peer, "anything")
            nursery.cancel_scope.cancel()


async def test_a_late_answer_is_dropped_not_taken_for_a_direct_message(bus: str) -> None:
    release = trio.Event()

    async def late(peer: trivy.Peer, text: str) -> str:
        if text == "slow":
            await release.wait()
        return text.upper()

    with trio.fail_after(TIMEOUT):
        async with (
            trivy.open_ivy_bus("SERVER", bus) as server,
            trivy.open_ivy_bus("CLIENT", bus) as client,
            client.direct_messages() as directs,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(server.requests.serve, late)
            peer = await client.wait_for_peer("SERVER")
            with trio.move_on_after(0.05):  # the caller gives up
                await client.requests.ask(peer, "slow")
            release.set()  # then the answer comes
            assert await client.requests.ask(peer, "fast") == "FAST"  # after it, in order
            with pytest.raises(trio.WouldBlock):
                directs.receive_nowait()  # the late "SLOW" went nowhere
            nursery.cancel_scope.cancel()
    assert MAX_ABANDONED >= 1000


async def test_requests_both_ways_with_ivy_python(bus: str) -> None:
    bus_port = int(bus.rsplit(":", 1)[1])
    with trio.fail_after(TIMEOUT):
        async with (
            trivy_bus(bus_port) as bus,
            ivy_python_peer(bus_port) as peer,
            trio.open_nursery() as nursery,
        ):
            trivy_peer = await meet(bus, peer)
            # trivy asks, ivy-python answers with the same id
            async with trio.open_nursery() as asking:
                answer: list[str] = []

                async def ask() -> None:
                    answer.append(await bus.requests.ask(trivy_peer, "2+2"))

                asking.start_soon(ask)
                request = await peer.expect("direct")
                assert request["text"] == "2+2"
                await peer.request(
                    "direct", "direct_sent", to=bus.agent_name, num_id=request["num_id"], text="4"
                )
            assert answer == ["4"]
            # ivy-python asks, trivy serves
            nursery.start_soon(bus.requests.serve, add)
            await peer.request("direct", "direct_sent", to=bus.agent_name, num_id=9, text="3+4")
            reply = await peer.expect("direct")
            assert (reply["num_id"], reply["text"]) == (9, "7")
            nursery.cancel_scope.cancel()

"""A waiter cancelled while parked is counted off once: the next one is still woken."""

from __future__ import annotations

import trio
import trio.testing

from trivy._channels import BufferedReceiveChannel

TIMEOUT = 5


async def test_a_consumer_cancelled_as_an_item_comes_leaves_the_next_one_woken() -> None:
    channel: BufferedReceiveChannel[str] = BufferedReceiveChannel(10)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def consumer_that_times_out() -> None:
                with scope:
                    await channel.receive()

            nursery.start_soon(consumer_that_times_out)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # its deadline: trio takes it out of the lot...
            assert channel._put_nowait("first")  # ...and an item comes before it runs
            await trio.testing.wait_all_tasks_blocked()
            assert await channel.receive() == "first"

            got: list[str] = []

            async def next_consumer() -> None:
                got.append(await channel.receive())

            nursery.start_soon(next_consumer)
            await trio.testing.wait_all_tasks_blocked()  # parked, the buffer empty
            assert channel._put_nowait("second")
    assert got == ["second"]  # before: never woken, the nursery waited forever


async def test_a_reader_cancelled_as_room_is_made_leaves_the_next_one_woken() -> None:
    channel: BufferedReceiveChannel[str] = BufferedReceiveChannel(1)
    assert channel._put_nowait("held")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def reader_of_an_aborted_peer() -> None:
                with scope:
                    await channel._put("dropped")

            nursery.start_soon(reader_of_an_aborted_peer)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # its session is aborted...
            assert channel.receive_nowait() == "held"  # ...as the consumer makes room
            await trio.testing.wait_all_tasks_blocked()
            assert channel._put_nowait("refill")

            delivered: list[str] = []

            async def next_reader() -> None:
                await channel._put("next")
                delivered.append("next")

            nursery.start_soon(next_reader)
            await trio.testing.wait_all_tasks_blocked()  # parked: the buffer is full
            assert channel.receive_nowait() == "refill"
    assert delivered == ["next"]
    assert channel.receive_nowait() == "next"

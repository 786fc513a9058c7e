"""A pytest-trio test of the button agent, written against trivy.testing only.

``ivy_bus_address`` and ``ivy_bus`` come from trivy's pytest plugin.
"""

import button_agent
import trio

from trivy.testing import wait_for_subscription


async def test_a_button_press_is_acknowledged(ivy_bus_address, ivy_bus):
    acks = ivy_bus.subscribe(r"^BTN_ACK (.*)")
    async with trio.open_nursery() as nursery:
        await nursery.start(button_agent.run, ivy_bus_address)  # subscribed when it returns
        # not just connected: subscribed (a send before that reaches no one);
        # it knows our ^BTN_ACK from our handshake, which precedes our text
        await wait_for_subscription(ivy_bus, button_agent.NAME, r"^BTN ([a-fA-F0-9]+)")
        assert await ivy_bus.send("BTN 1f") == 1
        with trio.fail_after(5):
            ack = await acks.receive()
        assert ack.groups == ("1f",)
        assert ack.peer.name == button_agent.NAME
        nursery.cancel_scope.cancel()


async def test_other_texts_get_no_answer(ivy_bus_address, ivy_bus):
    async with trio.open_nursery() as nursery:
        await nursery.start(button_agent.run, ivy_bus_address)
        await wait_for_subscription(ivy_bus, button_agent.NAME, r"^BTN ([a-fA-F0-9]+)")
        assert await ivy_bus.send("BTN zz") == 0  # not hex: no subscription matches
        nursery.cancel_scope.cancel()

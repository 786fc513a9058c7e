"""Testing Ivy agents: a private bus per test, agents in the background, real peers.

Installing trivy registers a pytest plugin (its fixtures are inert unless a
test requests them):

- ``ivy_bus_address``: a private loopback bus string for the test;
- ``ivy_bus``: an open :class:`~trivy.IvyBus` named ``"test-agent"`` on it.

With pytest-trio (``trio_mode = true``), a test of an agent looks like::

    async def test_my_agent_answers(ivy_bus_address, ivy_bus):
        async with trio.open_nursery() as nursery:
            await nursery.start(my_agent.run, ivy_bus_address)  # ready when started
            sub = ivy_bus.subscribe("^ANSWER (.*)")
            await wait_for_subscription(ivy_bus, "MyAgent", "^QUESTION")
            await ivy_bus.send("QUESTION 42")
            assert (await sub.receive()).groups == ("42",)
            nursery.cancel_scope.cancel()
"""

from ._helpers import RawPeer, free_bus_address, serve_bus, wait_for_event, wait_for_subscription
from ._ivy_python import IvyPythonAgent, ivy_python_agent

__all__ = [
    "IvyPythonAgent",
    "RawPeer",
    "free_bus_address",
    "ivy_python_agent",
    "serve_bus",
    "wait_for_event",
    "wait_for_subscription",
]

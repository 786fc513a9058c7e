"""Request/reply over direct messages: a tiny calculator service and its client.

Direct messages go to one agent, not through subscriptions: the service
answers each request to the one who asked, matched by the request's id.

    python examples/request_reply.py serve --bus 127:2010
    python examples/request_reply.py ask --bus 127:2010 "2 + 3" "10 / 4"

The client prints each question with its answer, then leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import operator

import trio

import trivy

SERVICE = "Calculator"
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def compute(question: str) -> str:
    """``"2 + 3"`` → ``"5"``; a question it cannot answer gives ``"error: ..."``."""
    try:
        left, symbol, right = question.split()
        return f"{OPERATORS[symbol](float(left), float(right)):g}"
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        return f"error: {exc or 'bad question'}"


async def serve(bus_string: str | None) -> None:
    """Answer every direct message with the same id, to its sender."""
    async with (
        trivy.open_ivy_bus(SERVICE, bus_string) as bus,
        bus.direct_messages() as requests,
    ):
        print("serving", flush=True)
        async for request in requests:
            bus.send_direct(request.peer, request.num_id, compute(request.text))


async def ask(bus_string: str | None, questions: list[str]) -> None:
    """Send each question, wait for the answer carrying its id."""
    async with (
        trivy.open_ivy_bus("Client", bus_string) as bus,
        bus.direct_messages() as answers,
    ):
        with trio.fail_after(10):
            service = await bus.wait_for_peer(SERVICE)
        ids = itertools.count(1)
        for question in questions:
            request_id = next(ids)
            bus.send_direct(service, request_id, question)
            with trio.fail_after(5):
                async for answer in answers:
                    if answer.peer == service and answer.num_id == request_id:
                        print(f"{question} = {answer.text}", flush=True)
                        break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["serve", "ask"])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    parser.add_argument("questions", nargs="*", help="for ask: questions like '2 + 3'")
    args = parser.parse_intermixed_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.role == "serve":
            trio.run(serve, args.bus)
        else:
            trio.run(ask, args.bus, args.questions)

"""``python -m trivy bridge``: the bridge as a command (its options are the front end's)."""

from __future__ import annotations

import argparse
import sys
import urllib.parse

import trio

from . import run_bridge
from ._mqtt import MqttError
from ._site import BridgeOptions

__all__ = ["bridge_options", "run_bridge_command"]


def bridge_options(args: argparse.Namespace) -> BridgeOptions:
    """The options, from the command line.

    Raises:
      ValueError: a bad broker address or site name.
    """
    url = urllib.parse.urlsplit(args.broker)
    if url.scheme != "mqtt" or not url.hostname:
        raise ValueError(f"--broker is mqtt://HOST:PORT, not {args.broker!r}")
    return BridgeOptions(
        bus=args.bus,
        broker_host=url.hostname,
        broker_port=url.port or 1883,
        site=args.site,
        topic=args.topic,
        allow_die=args.allow_die,
        keepalive=args.keepalive,
    )


async def run_bridge_command(options: BridgeOptions) -> None:
    """Bridge until cancelled, saying on stderr once it runs.

    Raises:
      MqttError: the broker cannot be reached, or is lost.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(run_bridge, options)
        where = f"{options.broker_host}:{options.broker_port}"
        print(f"trivy: bridging site {options.site!r} through {where}", file=sys.stderr, flush=True)


__all__ += ["MqttError"]  # (what the front end catches)

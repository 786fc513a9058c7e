"""``python -m trivy bridge``: the bridge as a command (its options are the front end's)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse

import trio

from . import BridgeConflict, run_bridge
from ._mqtt import MqttError
from ._options import BridgeOptions

__all__ = ["BridgeFailed", "bridge_options", "run_bridge_command"]

#: What the front end reports in one line.
BridgeFailed = (MqttError, BridgeConflict)


def bridge_options(args: argparse.Namespace) -> BridgeOptions:
    """The options, from the command line.

    Raises:
      ValueError: a bad broker address, site name or password file.
    """
    url = urllib.parse.urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ValueError(f"--broker is mqtt://[USER@]HOST[:PORT] or mqtts://…, not {args.broker!r}")
    if url.password is not None:
        raise ValueError("--broker: no password in the address (others see it): --password-file")
    tls = url.scheme == "mqtts"
    password = os.environ.get("TRIVY_MQTT_PASSWORD")
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as file:
                password = file.readline().rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read --password-file: {exc.strerror}") from None
    if args.ca_file is not None and not tls:
        raise ValueError("--ca-file needs a mqtts:// broker")
    return BridgeOptions(
        bus=args.bus,
        broker_host=url.hostname,
        broker_port=url.port or (8883 if tls else 1883),
        site=args.site,
        topic=args.topic,
        allow_die=args.allow_die,
        keepalive=args.keepalive,
        tls=tls,
        ca_file=args.ca_file,
        username=urllib.parse.unquote(url.username) if url.username else None,
        password=password if url.username else None,
    )


async def run_bridge_command(options: BridgeOptions) -> None:
    """Bridge until cancelled, saying on stderr once it runs.

    Raises:
      MqttError: the broker cannot be reached at start.
      BridgeConflict: the site is bridged already.
    """
    async with trio.open_nursery() as nursery:
        await nursery.start(run_bridge, options)
        where = f"{options.broker_host}:{options.broker_port}"
        print(f"trivy: bridging site {options.site!r} through {where}", file=sys.stderr, flush=True)

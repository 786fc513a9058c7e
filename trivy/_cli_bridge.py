"""``python -m trivy bridge``: its arguments, and running it (the extra loaded only then)."""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandFailed,
    UsageError,
    error_in,
    run_until_interrupted,
)

__all__ = ["add_bridge_arguments", "run_bridge"]


def add_bridge_arguments(commands: Any) -> None:
    """The ``bridge`` subcommand and its options."""
    bridge = commands.add_parser(
        "bridge", help="join this bus to other sites' through an MQTT broker (trivy[mqtt])"
    )
    bridge.add_argument(
        "-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS, then 127:2010)"
    )
    bridge.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="the MQTT broker: mqtt://[USER@]HOST[:PORT], or mqtts:// for TLS (port 8883)",
    )
    bridge.add_argument("--site", required=True, help="this site's name, unique among the sites")
    bridge.add_argument("--topic", default="trivy", help="the topics' prefix the sites share")
    bridge.add_argument(
        "--allow-die",
        action="store_true",
        help="pass DIEs between sites (off: one site cannot kill another's agents)",
    )
    bridge.add_argument(
        "--keepalive", type=int, default=10, help="seconds: a lost bridge is gone in 1.5x this"
    )
    bridge.add_argument(
        "--ca-file", default=None, help="with mqtts://: the authority that signed the broker's"
    )
    bridge.add_argument(
        "--password-file",
        default=None,
        help="a file whose first line is USER's password ($TRIVY_MQTT_PASSWORD otherwise)",
    )


async def run_bridge(args: argparse.Namespace) -> int:
    """Run the bridge until interrupted; a lost broker is reconnected to."""
    # An extra: imported only when its command runs (the core never needs it).
    try:
        from .bridge._command import BridgeFailed, bridge_options, run_bridge_command
    except ImportError as exc:
        raise UsageError(
            f"the bridge needs the mqtt extra (pip install 'trivy[mqtt]'): {exc}"
        ) from None
    try:
        options = bridge_options(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        interrupted = await run_until_interrupted(lambda: run_bridge_command(options))
    except Exception as exc:  # (nurseries wrap it in groups)
        failure = error_in(exc, BridgeFailed)
        if failure is None:
            raise
        raise CommandFailed(str(failure)) from None
    return EXIT_INTERRUPTED if interrupted else EXIT_OK

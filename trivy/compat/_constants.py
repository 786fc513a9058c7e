"""ivy-python's module-level constants, logging objects and no-op helpers."""

from __future__ import annotations

import logging
from typing import Any

from .. import protocol
from ..protocol import MsgType

# Message types, as plain ints like ivy-python's (MsgType is an IntEnum).
BYE = int(MsgType.BYE)
ADD_REGEXP = int(MsgType.ADD_REGEXP)
MSG = int(MsgType.MSG)
ERROR = int(MsgType.ERROR)
DEL_REGEXP = int(MsgType.DEL_REGEXP)
END_REGEXP = END_INIT = int(MsgType.END_REGEXP)
START_REGEXP = START_INIT = int(MsgType.START_REGEXP)
DIRECT_MSG = int(MsgType.DIRECT_MSG)
DIE = int(MsgType.DIE)
PING = int(MsgType.PING)
PONG = int(MsgType.PONG)

ARG_START = protocol.ARG_START
ARG_END = protocol.ARG_END
DEFAULT_IVYBUS = protocol.DEFAULT_IVYBUS
PROTOCOL_VERSION = protocol.PROTOCOL_VERSION
#: Multicast TTL, as in ivy-python (trivy's own default is the same).
DEFAULT_TTL = 64

#: ``app_callback(agent, event)`` events.
IvyApplicationConnected = 1
IvyApplicationDisconnected = 2
#: ``regexp_change_callback(agent, event, num_id, regexp)`` events.
IvyRegexpAdded = 3
IvyRegexpRemoved = 4
#: What a die callback returns to refuse to die.
IVY_SHOULD_NOT_DIE = "Ivy Application Should Not Die"

#: Seconds a PING started by :meth:`IvyClient.send_ping` waits for its PONG.
PING_TIMEOUT = 30.0

#: ivy-python's logger name; trivy's core logs under ``"trivy"``.
ivylogger = logging.getLogger("Ivy")
debug = ivylogger.debug
info = log = ivylogger.info
warn = ivylogger.warning
error = ivylogger.error
#: A stderr handler with ivy-python's format. Unlike ivy-python, it is not
#: attached to :data:`ivylogger` on import: the application decides.
ivy_loghdlr = logging.StreamHandler()
ivy_logformatter = logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s")
ivy_loghdlr.setFormatter(ivy_logformatter)


def trace(*args: Any, **kw: Any) -> None:
    """ivy-python's trace hook: does nothing."""


def void_function(*arg: Any, **kw: Any) -> Any:
    """Accept any arguments and do nothing (the default callback)."""
    return None


def first_line(text: str, what: str) -> str:
    """``text`` up to its first newline, which trivy refuses in a text.

    ivy-python sends such a text whole; its regexps' groups stop at the
    newline (``.`` does not match it), so its peers get the first line.
    """
    if "\n" not in text:
        return text
    warn("%s %r has a newline: only its first line is sent", what, text[:80])
    return text.split("\n", 1)[0]

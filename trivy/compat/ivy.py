"""ivy-python's ``ivy.ivy`` API (:class:`IvyServer`, :class:`IvyTimer`...) over trivy.

Port an ivy-python agent by changing one import::

    from trivy.compat.ivy import IvyServer

:meth:`IvyServer.start` runs a trivy bus (:func:`trivy.open_ivy_bus`) under
``trio.run`` in a background thread and returns once the bus listens.
Callbacks run in that thread, with ivy-python's signatures. Every public
method may be called from any thread: from another thread it goes through
``trio.from_thread.run_sync``; from a callback (the bus's own thread) it runs
directly.

What differs from ivy-python, and what is not supported, is listed in
``docs/compat.md``.
"""

from .._errors import IvyIllegalStateError, IvyMalformedMessage, IvyProtocolError
from ._client import IvyClient
from ._constants import (
    ADD_REGEXP,
    ARG_END,
    ARG_START,
    BYE,
    DEFAULT_IVYBUS,
    DEFAULT_TTL,
    DEL_REGEXP,
    DIE,
    DIRECT_MSG,
    END_INIT,
    END_REGEXP,
    ERROR,
    IVY_SHOULD_NOT_DIE,
    MSG,
    PING,
    PING_TIMEOUT,  # noqa: F401  (a module attribute in ivy-python too)
    PONG,
    PROTOCOL_VERSION,
    START_INIT,
    START_REGEXP,
    IvyApplicationConnected,
    IvyApplicationDisconnected,
    IvyRegexpAdded,
    IvyRegexpRemoved,
    debug,
    error,
    ivy_logformatter,
    ivy_loghdlr,
    ivylogger,
    log,
    trace,
    void_function,
    warn,
)
from ._constants import info as info  # not in __all__, but kept as a module attribute
from ._functions import (
    IvyHandler,
    UDP_init_and_listen,
    decode_ivybus,
    decode_msg,
    decode_MSG_params,
    encode_message,
    is_multicast,
)
from ._handlers import ClientsBinding
from ._server import IvyServer
from ._timer import IvyTimer

__all__ = [
    "ADD_REGEXP",
    "ARG_END",
    "ARG_START",
    "BYE",
    "DEFAULT_IVYBUS",
    "DEFAULT_TTL",
    "DEL_REGEXP",
    "DIE",
    "DIRECT_MSG",
    "END_INIT",
    "END_REGEXP",
    "ERROR",
    "IVY_SHOULD_NOT_DIE",
    "MSG",
    "PING",
    "PONG",
    "PROTOCOL_VERSION",
    "START_INIT",
    "START_REGEXP",
    "ClientsBinding",
    "IvyApplicationConnected",
    "IvyApplicationDisconnected",
    "IvyClient",
    "IvyHandler",
    "IvyIllegalStateError",
    "IvyMalformedMessage",
    "IvyProtocolError",
    "IvyRegexpAdded",
    "IvyRegexpRemoved",
    "IvyServer",
    "IvyTimer",
    "UDP_init_and_listen",
    "debug",
    "decode_MSG_params",
    "decode_ivybus",
    "decode_msg",
    "encode_message",
    "error",
    "is_multicast",
    "ivy_logformatter",
    "ivy_loghdlr",
    "ivylogger",
    "log",
    "trace",
    "void_function",
    "warn",
]

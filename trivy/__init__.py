"""trivy: an Ivy software-bus agent for trio.

Join a bus with :func:`open_ivy_bus`, subscribe with regular expressions and
receive the capture groups of every matching text through channels::

    async with trivy.open_ivy_bus("MyAgent", "127:2010") as bus:
        async with bus.subscribe(r"^BTN ([a-fA-F0-9]+)") as sub:
            async for match in sub:
                await bus.send(f"BTN_ACK {match.groups[0]}")
"""

from ._bus import IvyBus
from ._channels import Subscription
from ._errors import (
    IvyError,
    IvyIllegalStateError,
    IvyMalformedMessage,
    IvyProtocolError,
    RequestFailed,
)
from ._event_streams import EventStream
from ._events import (
    BusEvent,
    Congestion,
    DieReceived,
    DirectMessage,
    ErrorReceived,
    Match,
    Peer,
    PeerConnected,
    PeerDisconnected,
    PeerResponsive,
    PeerUnresponsive,
    SubscriptionAdded,
    SubscriptionChanged,
    SubscriptionRemoved,
)
from ._message_classes import MessageClasses
from ._open import open_ivy_bus
from ._options import BusOptions
from ._requests import Requests
from ._timers import Timer

__version__ = "0.1.0"

__all__ = [
    "BusEvent",
    "BusOptions",
    "Congestion",
    "DieReceived",
    "DirectMessage",
    "ErrorReceived",
    "EventStream",
    "IvyBus",
    "IvyError",
    "IvyIllegalStateError",
    "IvyMalformedMessage",
    "IvyProtocolError",
    "Match",
    "MessageClasses",
    "Peer",
    "PeerConnected",
    "PeerDisconnected",
    "PeerResponsive",
    "PeerUnresponsive",
    "RequestFailed",
    "Requests",
    "Subscription",
    "SubscriptionAdded",
    "SubscriptionChanged",
    "SubscriptionRemoved",
    "Timer",
    "open_ivy_bus",
]

"""The exceptions trivy raises (names follow ivy-python's, so ports read the same)."""

from __future__ import annotations

__all__ = [
    "IvyError",
    "IvyIllegalStateError",
    "IvyMalformedMessage",
    "IvyProtocolError",
    "RequestFailed",
]


class IvyError(Exception):
    """Base class of every trivy-specific error."""


class IvyProtocolError(IvyError):
    """A peer broke the Ivy protocol (well-formed line, wrong place or meaning)."""


class IvyMalformedMessage(IvyProtocolError):
    """A line or datagram does not have the Ivy shape (``type id\\x02params``)."""


class IvyIllegalStateError(IvyError, RuntimeError):
    """An operation was attempted in a state that does not allow it.

    For example sending on a bus that has stopped.
    """


class RequestFailed(IvyError):
    """A request got no answer: the peer refused it (an ERROR) or left.

    Attributes:
      peer: the :class:`~trivy.Peer` asked.
      reason: the ERROR's text, or why there is no answer.
    """

    def __init__(self, peer: object, reason: str) -> None:
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason

"""The exceptions trivy raises (names follow ivy-python's, so ports read the same)."""

from __future__ import annotations

__all__ = [
    "IvyError",
    "IvyIllegalStateError",
    "IvyMalformedMessage",
    "IvyProtocolError",
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

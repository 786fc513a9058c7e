"""How long one peer may keep our senders waiting: a leaky bucket of seconds.

A peer over its output limit makes ``send`` wait. One that reads a trickle
(64 KiB every 4 s) takes some bytes before every stall check, yet holds
every sender to its pace for as long as it likes. So the time senders
spend waiting for one peer is charged to it: :class:`Patience` adds up the
seconds someone waited and forgives :data:`FORGIVEN_PER_SECOND` of them per
second nobody did. Once the total reaches the budget (``stall_timeout``),
the peer is let go. A peer that is behind now and then (a burst, a pause)
never reaches it; one that keeps the senders waiting most of the time
does, within the budget: no ``send`` waits longer than that for one peer.
"""

from __future__ import annotations

__all__ = ["FORGIVEN_PER_SECOND", "Patience"]

#: Seconds of waiting forgiven per second in which nobody waits: a peer may
#: keep senders waiting one second in eleven for ever, and the whole budget
#: once in a while.
FORGIVEN_PER_SECOND = 0.1


class Patience:
    """The seconds senders waited for one peer, lately (see the module docstring).

    Args:
      budget: seconds of waiting, net of what was forgiven, past which the
        peer has run out of patience (``math.inf``: never).
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._waited = 0.0  # net of what was forgiven, as of _since
        self._since = 0.0
        self._waiting = False

    def start_waiting(self, now: float) -> None:
        """Someone starts to wait for the peer (nobody did)."""
        idle = now - self._since
        self._waited = max(0.0, self._waited - idle * FORGIVEN_PER_SECOND)
        self._since = now
        self._waiting = True

    def stop_waiting(self, now: float) -> None:
        """Nobody waits for the peer any more."""
        self._waited += now - self._since
        self._since = now
        self._waiting = False

    def runs_out_at(self) -> float:
        """When the patience runs out if the present wait goes on."""
        return self._since + self.budget - self._waited

    def waited(self, now: float) -> float:
        """Seconds waited for the peer, net of what was forgiven, as of ``now``."""
        if self._waiting:
            return self._waited + now - self._since
        return max(0.0, self._waited - (now - self._since) * FORGIVEN_PER_SECOND)
